"""nbhelpers.train on SDXL (`--base tiny:sdxl`: the random miniature SDXL, 64 px): the conditioning matches diffusers'
own SDXL pipeline, the CLI trains, the LoRA loads in plain StableDiffusionXLPipeline and changes its pictures,
DreamBooth with prior preservation trains both text encoders, and bad `--base` values are refused up front.
Exact resume after a kill is tested with the SD 1.5 one (test_train_run.py, parametrized by base)."""

import pytest
import torch
from safetensors.torch import load_file

from nbhelpers.checks import ParameterError
from nbhelpers.loaders import resolve_source
from nbhelpers.profiles import PROFILES, ModelSpec
from nbhelpers.train import TrainConfig, bases, cli, export, shipped_data, train

LORA, DREAMBOOTH = str(shipped_data("lora")), str(shipped_data("dreambooth"))
PROMPT = "a red circle with stripes"


@pytest.fixture(scope="module")
def tiny_sdxl():
    return resolve_source(ModelSpec("tiny:sdxl"))


def _pipe(folder):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _draw(pipe, prompt=PROMPT):
    return pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """What the issue asks to run: nbhelpers train lora --base tiny:sdxl --profile tiny ... --steps 8."""
    out = tmp_path_factory.mktemp("xl") / "run"
    code = cli.main(["lora", "--base", "tiny:sdxl", "--profile", "tiny", "--data", LORA, "--steps", "8",
                     "--output", str(out), "--no-progress"])
    assert code == 0
    return out


def test_the_base_names_an_sdxl_model_and_its_defaults():
    tiny = PROFILES["tiny"]
    assert bases.resolve(tiny, None).family == "sd" and bases.resolve(tiny, "lab:sd").family == "sd"
    assert bases.resolve(tiny, "tiny:sdxl").family == bases.resolve(tiny, "train_sdxl").family == "sdxl"
    t4 = PROFILES["t4"]
    xl = bases.resolve(t4, "train_sdxl")  # known architecture: read from data/configs, no download
    assert xl.family == "sdxl" and xl.spec.vae == "madebyollin/sdxl-vae-fp16-fix" and xl.spec.dtype == "float16"
    hub = bases.resolve(t4, "stabilityai/stable-diffusion-xl-base-1.0")
    assert hub.family == "sdxl" and hub.spec.vae == "madebyollin/sdxl-vae-fp16-fix"  # the fp16-safe VAE on a T4
    config = TrainConfig(mode="lora", data=LORA, output="unused", profile="t4", base="train_sdxl").resolved()
    assert (config.resolution, config.gradient_checkpointing, config.use_8bit_adam, config.cache_latents) == \
        (1024, True, True, True)
    assert TrainConfig(mode="lora", data=LORA, output="unused", profile="t4").resolved().resolution == 512


@pytest.mark.parametrize("base, says", [
    ("sdxl please", "a profile model key"),
    ("tiny:nothing", "tiny:sdxl"),
    ("inpaint", "not a text-to-image one"),
    ("tiny:mixtral", "model without model_index.json"),
    ("someone/not-cached-anywhere", "could not be read"),  # tests run offline: refused before any weights load
])
def test_bad_base_values_are_refused_before_any_model_loads(base, says, tmp_path, monkeypatch):
    from nbhelpers import loaders

    monkeypatch.setattr(loaders, "load_diffusion", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ParameterError) as error:
        train(TrainConfig(mode="lora", data=LORA, output=str(tmp_path / "out"), profile="tiny", base=base))
    assert error.value.name == "base" and says in str(error.value) and "train_sdxl" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_cli_names_a_bad_base(capsys):
    assert cli.main(["lora", "--base", "nonsense", "--profile", "tiny", "--data", LORA, "--output", "x"]) != 0
    assert "base='nonsense' is not allowed" in capsys.readouterr().err


def test_the_trainer_conditions_the_unet_as_the_sdxl_pipeline_does(tiny_sdxl):
    """Hidden states of both encoders, the pooled vector and the six size numbers: equal to what diffusers'
    StableDiffusionXLPipeline computes for the same prompt and sizes."""
    from nbhelpers.train.loop import TextEncoder, size_conditioning

    pipe = _pipe(tiny_sdxl)
    states, pooled = TextEncoder(pipe, trained=False, family="sdxl")([PROMPT], "cpu")
    expected, _, expected_pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert torch.equal(states, expected) and torch.equal(pooled, expected_pooled)
    time_ids = size_conditioning(torch.tensor([[1600, 2400, 0, 32]]), 64, "cpu")
    by_pipeline = pipe._get_add_time_ids((1600, 2400), (0, 32), (64, 64), dtype=torch.float32,
                                         text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(time_ids, by_pipeline)


def test_the_data_records_original_size_and_crop(tmp_path):
    from PIL import Image

    from nbhelpers.train import data

    Image.new("RGB", (240, 160), (0, 0, 255)).save(tmp_path / "wide.png")  # 3:2 -> 96x64, crop 16 from the left
    images = data.load_folder(tmp_path, 64, instance_prompt="a picture")
    assert images.origins == [(160, 240, 0, 16)]
    batch = data.collate([data.TrainingStream(images, 1, seed=0)[0]])
    assert batch["origins"].tolist() == [[160, 240, 0, 16]]


def test_the_sdxl_lora_loads_in_plain_diffusers_and_changes_the_output(cli_run, tiny_sdxl):
    losses = load_file(str(cli_run / export.LORA_FILE))
    assert losses and all(k.startswith("unet.") for k in losses)
    pipe = _pipe(tiny_sdxl)
    before = _draw(pipe)
    pipe.load_lora_weights(str(cli_run))  # the plain call: the folder only
    after = _draw(pipe)
    assert abs(after - before).max() > 1e-3
    kohya = _pipe(tiny_sdxl)
    kohya.load_lora_weights(str(cli_run), weight_name=export.KOHYA_FILE)
    assert abs(_draw(kohya) - after).max() < 1e-3  # kohya files are fp16


def test_the_sdxl_run_records_its_base_and_trains_at_the_profile_size(cli_run):
    import json

    record = json.loads((cli_run / "run.json").read_text())
    assert record["finished"] and record["settings"]["base"] == "tiny:sdxl" and record["settings"]["profile"] == "tiny"
    assert len(json.loads((cli_run / "losses.json").read_text())) == 8
    card = (cli_run / "README.md").read_text()
    assert "base_model: \"tiny:sdxl\"" in card and "stable-diffusion-xl" in card
    metadata = _metadata(cli_run / export.KOHYA_FILE)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"


def _metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_sdxl_dreambooth_with_prior_preservation_trains_both_text_encoders(tmp_path, tiny_sdxl):
    config = TrainConfig(mode="dreambooth", data=DREAMBOOTH, output=str(tmp_path / "db"), profile="tiny",
                         base="tiny:sdxl", steps=3, batch_size=1, instance_prompt="a sks shape on a white background",
                         class_prompt="a shape on a white background", num_class_images=2, class_image_steps=2,
                         train_text_encoder=True, cache_latents=True, progress=False)
    result = train(config)
    assert {"instance", "prior"} <= set(result.losses[0]) and len(list(result.files["class_images"].glob("*.png"))) == 2
    weights = load_file(str(result.lora))
    assert any(k.startswith("text_encoder.") for k in weights) and any(k.startswith("text_encoder_2.") for k in weights)
    kohya = load_file(str(result.files["kohya"]))
    assert any(k.startswith("lora_te1_") for k in kohya) and any(k.startswith("lora_te2_") for k in kohya)
    pipe = _pipe(tiny_sdxl)
    before = _draw(pipe, "a sks shape on a white background")
    pipe.load_lora_weights(str(result.output))
    assert abs(_draw(pipe, "a sks shape on a white background") - before).max() > 1e-3
