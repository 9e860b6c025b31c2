"""nbhelpers.train for real on the tiny model (64 px, a few steps): outputs, DreamBooth priors, DDP, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from nbhelpers.loaders import resolve_source
from nbhelpers.profiles import PROFILES
from nbhelpers.train import TrainConfig, checkpoints, export, shipped_data, train

LORA = str(shipped_data("lora"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

BASE = resolve_source(PROFILES["tiny"].model("train_base"))  # the model `--profile tiny` trains on


def _lora(output, **overrides):
    values = dict(mode="lora", data=LORA, output=str(output), profile="tiny", steps=4, batch_size=2, seed=0,
                  checkpoint_every=2, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def _cli(*args, mode="lora", data=LORA):
    return [sys.executable, "-m", "nbhelpers.train", mode, "--data", data, "--profile", "tiny", "--no-progress",
            *map(str, args)]


def _weights(folder):
    return load_file(str(folder / export.LORA_FILE))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, batch 2, 4 steps."""
    return train(_lora(tmp_path_factory.mktemp("ref") / "run"))


def test_the_lesson_loss_is_the_loss_the_trainer_steps_on(tmp_path):
    """Notebook 04 prints objective.denoising_loss as "the training step": fed the batch's own latents, noise and
    timesteps by hand, it gives exactly the loss the trainer's train_step reports for that batch."""
    from nbhelpers.train import data, loop
    from nbhelpers.train.objective import denoising_loss

    config = _lora(tmp_path / "run", snr_gamma=5.0).resolved()
    instances = data.load_folder(config.data, config.resolution)
    with loop.deterministic_on_cpu():
        try:
            run = loop.start_run(config, loop.make_accelerator(config), instances)
            batch = next(iter(run.loader))
            vae_eps, noise, timesteps = loop.example_randomness(batch["keys"], run.latent_shape, 1000, config.seed)
            latents = loop.latents_of(batch["images"], run.pipe.vae, vae_eps, cached=False)
            with torch.no_grad():
                states = run.pipe.text_encoder(run.pipe.tokenizer(
                    batch["prompts"], padding="max_length", max_length=run.pipe.tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids)[0]
                by_hand = denoising_loss(run.models["unet"], latents, states, noise, timesteps, run.noise_scheduler,
                                         snr_gamma=5.0).mean().item()
            trainer_loss = loop.train_step(run, batch)[0]
        finally:
            loop.release_accelerate_state()
    assert len(set(timesteps.tolist())) == 2  # two different noise levels in the batch, so weighting matters
    assert by_hand == pytest.approx(trainer_loss, rel=1e-5)


def test_the_lora_loads_in_plain_diffusers_and_changes_the_output(reference):
    from diffusers import StableDiffusionPipeline

    assert reference.lora.is_file() and len(reference.losses) == 4
    pipe = StableDiffusionPipeline.from_pretrained(BASE, safety_checker=None, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)

    def draw():
        return pipe("a red circle with stripes", num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = draw()
    pipe.load_lora_weights(str(reference.output), weight_name=export.LORA_FILE)  # offline diffusers 0.39 needs the name
    after = draw()
    assert abs(after - before).max() > 1e-3


def test_the_kohya_export_has_the_expected_key_names(reference):
    kohya = load_file(str(reference.files["kohya"]))
    peft = [k for k in _weights(reference.output) if k.startswith("unet.")]
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= set(kohya)
    assert all(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
               for k in kohya)
    assert len(kohya) == len(peft) // 2 * 3  # down, up and alpha per module
    rank, alpha = reference.config.rank, reference.config.lora_alpha  # the tiny profile's (8 and 8)
    assert kohya[f"{name}.alpha"].item() == alpha and kohya[f"{name}.lora_down.weight"].shape[0] == rank


def test_the_kohya_file_draws_like_the_diffusers_file(reference):
    """diffusers reads kohya files with its own converter (written for A1111/kohya LoRAs): same pictures."""
    from diffusers import StableDiffusionPipeline

    def draw(**weights):
        pipe = StableDiffusionPipeline.from_pretrained(BASE, safety_checker=None,
                                                       use_safetensors=True)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(reference.output), **weights)
        return pipe("a red circle with stripes", num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    assert abs(draw(weight_name=export.LORA_FILE) - draw(weight_name=export.KOHYA_FILE)).max() < 1e-3  # kohya files are fp16


def test_the_model_card_and_run_record(reference):
    card = (reference.output / "README.md").read_text()
    assert card.startswith(f"---\nbase_model: \"{PROFILES['tiny'].model('train_base').source}\"") and f"| rank | {reference.config.rank} |" in card and "load_lora_weights" in card
    record = checkpoints.read_run(reference.output)
    assert record["finished"] and record["settings"]["steps"] == 4
    assert [c.name for c in checkpoints.complete(reference.output)] == ["step-00000002"]


def test_a_finished_run_is_returned_not_retrained(reference):
    again = train(_lora(reference.output, resume="latest"))
    assert again.losses == reference.losses and again.lora == reference.lora and again.resumed_from == 0


@pytest.mark.slow
@pytest.mark.parametrize("base", [None, "tiny:sdxl"], ids=["sd", "sdxl"])
def test_two_processes_match_one_process_with_the_same_global_batch(reference, tmp_path, base):
    if base is not None:
        reference = train(_lora(tmp_path / "one", base=base))
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "nbhelpers.train", "lora", "--data", LORA, "--profile", "tiny", "--no-progress",
               "--steps", "4", "--batch-size", "1", "--checkpoint-every", "2", "--output", str(out)]
    command += ["--base", base] if base else []
    try:
        subprocess.run(command, check=True, env=ENV, timeout=240, capture_output=True, text=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:  # show why, not only that
        stderr = error.stderr or ""
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr  # bytes after a timeout
        pytest.fail(f"torchrun failed: {type(error).__name__}\n{stderr[-3000:]}")
    diff = _max_diff(_weights(out), _weights(reference.output))
    print(f"DDP 2x1 vs 1x2: max abs weight difference {diff:.2e}")
    assert diff < 1e-4
    losses = json.loads((out / "losses.json").read_text())
    assert [round(r["loss"], 4) for r in losses] == [round(r["loss"], 4) for r in reference.losses]


@pytest.mark.slow
def test_the_notebook_launcher_runs_the_same_two_process_training(reference, tmp_path):
    from nbhelpers.train import launch

    result = launch(_lora(tmp_path / "launched", batch_size=1), num_processes=2)
    assert _max_diff(_weights(result.output), _weights(reference.output)) < 1e-4


DREAMBOOTH_XL = {"mode": "dreambooth", "data": str(shipped_data("dreambooth")), "base": "tiny:sdxl",
                 "instance_prompt": "a sks shape", "class_prompt": "a shape", "num_class_images": 2,
                 "class_image_steps": 2}


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{}, {"base": "tiny:sdxl"}, DREAMBOOTH_XL], ids=["sd", "sdxl", "sdxl-dreambooth"])
def test_a_killed_run_resumes_to_exactly_the_same_weights(tmp_path, capsys, settings):
    steps = 24
    uninterrupted = train(_lora(tmp_path / "long", steps=steps, batch_size=1, **settings))
    out = tmp_path / "killed"  # beside "long": the DreamBooth class images are made once and shared
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items() if name not in ("mode", "data")]
    command = _cli("--steps", steps, "--batch-size", 1, "--checkpoint-every", 2, "--output", out, *flags,
                   mode=settings.get("mode", "lora"), data=settings.get("data", LORA))
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while checkpoints.latest(out) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / export.LORA_FILE).exists(), "the run finished before it could be killed"
    killed_at = json.loads((checkpoints.latest(out) / checkpoints.STATE_FILE).read_text())["step"]
    assert 2 <= killed_at < steps

    resumed = train(_lora(out, steps=steps, batch_size=1, resume="latest", **settings))  # `--resume latest`
    assert resumed.resumed_from == killed_at and f"at step {killed_at}" in capsys.readouterr().out
    diff = _max_diff(_weights(out), _weights(uninterrupted.output))
    print(f"killed at step {killed_at}, resumed: max abs weight difference {diff}")
    assert diff == 0.0
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in uninterrupted.losses]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.losses] == strip


def test_dreambooth_with_prior_preservation_caches_its_class_images(tmp_path):
    config = TrainConfig(mode="dreambooth", data=str(shipped_data("dreambooth")), output=str(tmp_path / "db"),
                         profile="tiny", steps=3, batch_size=1, instance_prompt="a sks shape on a white background",
                         class_prompt="a shape on a white background", num_class_images=3, class_image_steps=2,
                         snr_gamma=5.0, cache_latents=True, train_text_encoder=True, validation_every=3,
                         validation_prompts=("a sks shape",), progress=False)
    result = train(config)
    assert {"instance", "prior"} <= set(result.losses[0])
    [folder] = (tmp_path / "class_images").iterdir()
    made = {p.name: p.stat().st_mtime_ns for p in folder.glob("class-*.png")}
    assert len(made) == 3 and (tmp_path / "db" / "validation" / "step-00000003.png").is_file()
    assert any(k.startswith("text_encoder.") for k in _weights(result.output))
    assert any(k.startswith("lora_te_") for k in load_file(str(result.files["kohya"])))

    train(TrainConfig(**{**config.__dict__, "output": str(tmp_path / "db2"), "steps": 1, "validation_every": 0}))
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("class-*.png")} == made  # reused, not redrawn


def test_gradient_accumulation_matches_the_same_global_batch(reference, tmp_path):
    accumulated = train(_lora(tmp_path / "accum", batch_size=1, gradient_accumulation=2))
    # Summing two halves rounds differently from one batch; Adam turns that into weight differences that scale with
    # the learning rate (measured 0.5% of one step's size at the tiny profile's 4e-3).
    assert _max_diff(_weights(accumulated.output), _weights(reference.output)) < 1e-2 * reference.config.learning_rate


def test_a_full_dreambooth_fine_tune_saves_a_whole_unet_and_resumes(tmp_path):
    from diffusers import UNet2DConditionModel

    config = TrainConfig(mode="dreambooth", data=str(shipped_data("dreambooth")), output=str(tmp_path / "full"),
                         profile="tiny", steps=2, batch_size=1, instance_prompt="a sks shape", full_finetune=True,
                         checkpoint_every=1, lr_scheduler="constant_with_warmup", warmup_steps=2, progress=False)
    result = train(config)
    assert result.config.learning_rate == 1e-4 and not (result.output / export.LORA_FILE).exists()
    assert [r["lr"] for r in result.losses] == pytest.approx([0.5e-4, 1e-4])  # warm-up over two steps
    unet = UNet2DConditionModel.from_pretrained(str(result.files["unet"]), use_safetensors=True)
    assert sum(p.numel() for p in unet.parameters()) > 100_000
    assert (checkpoints.latest(result.output) / "trainable_0.safetensors").is_file()
