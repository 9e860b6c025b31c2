"""nbhelpers.train without training: the prior loss by hand, data handling, and every bad input refused up front."""

import json

import pytest
import torch
from PIL import Image

from nbhelpers.checks import ParameterError
from nbhelpers.train import TrainConfig, checkpoints, cli, data, priors, shipped_data, train


def test_prior_preservation_loss_matches_a_hand_computation():
    errors = torch.tensor([2.5, 1.0, 2.0, 1.0])  # instance half mean 1.75, class half 1.5
    loss, instance, prior = priors.split_prior_loss(errors, prior_loss_weight=0.5)
    assert instance.item() == pytest.approx(1.75) and prior.item() == pytest.approx(1.5)
    assert loss.item() == pytest.approx(1.75 + 0.5 * 1.5)


def test_denoising_loss_is_the_weighted_squared_error_of_the_noise_prediction():
    from types import SimpleNamespace

    from nbhelpers.train.objective import denoising_loss

    class Scheduler:  # noisy = latents + noise, whatever the timestep
        config = SimpleNamespace(prediction_type="epsilon")
        alphas_cumprod = torch.tensor([0.9, 0.5])

        def add_noise(self, latents, noise, timesteps):
            return latents + noise

    def unet(noisy, timesteps, states):  # predicts the noisy input itself
        return SimpleNamespace(sample=noisy)

    latents, noise = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    timesteps = torch.tensor([0, 1])
    assert torch.equal(denoising_loss(unet, latents, None, noise, timesteps, Scheduler()), torch.ones(2))
    weighted = denoising_loss(unet, latents, None, noise, timesteps, Scheduler(), snr_gamma=5.0)
    assert torch.allclose(weighted, torch.tensor([5 / 9, 1.0]))  # SNR 9 is capped at 5; SNR 1 keeps weight 1


def test_min_snr_weights_match_a_hand_computation():
    from types import SimpleNamespace

    from nbhelpers.train.objective import min_snr_weights

    def scheduler(prediction_type):
        return SimpleNamespace(alphas_cumprod=torch.tensor([0.9, 0.5, 0.1]),
                               config=SimpleNamespace(prediction_type=prediction_type))

    snr = torch.tensor([9.0, 1.0, 1 / 9])  # alpha / (1 - alpha)
    weights = min_snr_weights(scheduler("epsilon"), torch.tensor([0, 1, 2]), 5.0)
    assert torch.allclose(weights, torch.minimum(snr, torch.tensor(5.0)) / snr)  # 5/9, 1, 1
    assert torch.allclose(min_snr_weights(scheduler("v_prediction"), torch.tensor([0]), 5.0), torch.tensor([0.5]))


def test_odd_images_become_square_rgb_at_the_training_size(tmp_path):
    Image.new("L", (40, 90), 100).save(tmp_path / "gray.png")
    Image.new("RGBA", (300, 120), (255, 0, 0, 0)).save(tmp_path / "transparent.png")  # fully transparent: white
    Image.new("P", (33, 33)).save(tmp_path / "palette.gif")
    Image.new("RGB", (2400, 1600), (0, 0, 255)).save(tmp_path / "large.jpg")
    (tmp_path / "large.txt").write_text("a blue picture\n")
    images = data.load_folder(tmp_path, 64, instance_prompt="a picture")
    assert [tuple(t.shape) for t in images.images] == [(3, 64, 64)] * 4
    assert images.prompts[[p.name for p in images.files].index("large.jpg")] == "a blue picture"
    transparent = images.images[[p.name for p in images.files].index("transparent.png")]
    assert transparent.min().item() == 255


def test_the_stream_does_not_depend_on_how_it_is_read():
    images = data.ImageSet([torch.full((3, 2, 2), i, dtype=torch.uint8) for i in range(5)], list("abcde"), [])
    stream = data.TrainingStream(images, 20, seed=3)
    order = [stream[p]["prompt"] for p in range(20)]
    again = data.TrainingStream(images, 20, seed=3)
    assert [again[p]["prompt"] for p in reversed(range(20))] == order[::-1]
    assert sorted(order[:5]) == list("abcde") and sorted(order[5:10]) == list("abcde")  # epochs are permutations


def test_the_shipped_datasets_are_complete():
    lora = data.load_folder(shipped_data("lora"), 64)
    assert len(lora.images) == 13 and all("stripes" in p for p in lora.prompts)
    subject = data.load_folder(shipped_data("dreambooth"), 64, instance_prompt="a sks shape", use_captions=False)
    assert len(subject.images) == 5


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: bad input must be refused before."""
    from nbhelpers import loaders

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loaders, "load_diffusion", refuse)


def _config(tmp_path, **overrides):
    values = dict(mode="lora", data=str(shipped_data("lora")), output=str(tmp_path / "out"), profile="tiny", steps=2)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("overrides, parameter", [
    ({"rank": 0}, "rank"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1e-4}, "learning_rate"),
    ({"steps": 0}, "steps"),
    ({"mode": "textual_inversion"}, "mode"),
    ({"resolution": 60}, "resolution"),
    ({"mode": "dreambooth"}, "instance_prompt"),
    ({"full_finetune": True}, "full_finetune"),
    ({"class_prompt": "a dog"}, "class_prompt"),
    ({"mode": "dreambooth", "instance_prompt": "a sks dog", "class_prompt": "a dog", "num_class_images": 0},
     "num_class_images"),
    ({"mixed_precision": "fp8"}, "mixed_precision"),
])
def test_bad_settings_are_refused(tmp_path, no_model, overrides, parameter):
    with pytest.raises(ParameterError) as error:
        train(_config(tmp_path, **overrides))
    assert error.value.name == parameter


def _folder(tmp_path, files: dict):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in files.items():
        if content == "image":
            Image.new("RGB", (70, 50), "red").save(folder / name)
        else:
            (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("files, message", [
    ({}, "holds none"),
    ({"a.png": "image", "notes.pdf": b"%PDF-1.4"}, "notes.pdf"),
    ({"a.png": "image", "broken.png": b"\x89PNG\r\n\x1a\n not really"}, "corrupt"),
    ({"a.png": "image", "a.txt": b"a red thing", "b.txt": b"orphan"}, "no image for b.txt"),
    ({"a.png": "image"}, "caption"),
    ({"a.png": "image", "a.txt": b"  \n"}, "empty"),
])
def test_bad_data_folders_are_refused(tmp_path, no_model, files, message):
    folder = _folder(tmp_path, files)
    with pytest.raises(ParameterError, match=message) as error:
        train(_config(tmp_path, data=str(folder)))
    assert error.value.name == "data"


def test_a_missing_data_folder_is_refused(tmp_path, no_model):
    with pytest.raises(ParameterError, match="does not exist"):
        train(_config(tmp_path, data=str(tmp_path / "nowhere")))


def test_an_output_folder_holding_something_else_is_never_touched(tmp_path, no_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.png").write_bytes(b"keep me")
    with pytest.raises(ParameterError, match="precious.png") as error:
        train(_config(tmp_path))
    assert error.value.name == "output" and (out / "precious.png").read_bytes() == b"keep me"


def test_an_output_folder_holding_another_run_is_refused(tmp_path, no_model):
    config = _config(tmp_path).resolved()
    checkpoints.write_run(config.output, config)
    with pytest.raises(ParameterError, match="holds a run already"):
        train(_config(tmp_path))  # same settings, no --resume
    with pytest.raises(ParameterError, match="another run .different rank"):
        train(_config(tmp_path, rank=16, resume="latest"))


def test_resume_latest_without_a_checkpoint_says_so(tmp_path, no_model):
    with pytest.raises(ParameterError, match="holds none.*fresh_if_missing") as error:
        train(_config(tmp_path, resume="latest"))
    assert error.value.name == "resume"
    fresh = _config(tmp_path, resume="latest", fresh_if_missing=True).resolved()
    assert checkpoints.plan_start(fresh).kind == "fresh"


def test_the_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    code = cli.main(["lora", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o"), "--rank", "0"])
    assert code == 2 and "rank=0" in capsys.readouterr().err
    from nbhelpers import cli as top

    assert top.main(["train", "dreambooth", "--data", str(shipped_data("dreambooth")),
                     "--output", str(tmp_path / "o")]) == 2


def test_profiles_carry_the_t4_memory_settings():
    config = TrainConfig(mode="dreambooth", data="d", output="o", profile="t4", instance_prompt="a sks dog",
                         mixed_precision="bf16")  # bf16 given so that resolving works on this CPU machine
    resolved = config.resolved()
    assert (resolved.resolution, resolved.rank, resolved.gradient_checkpointing, resolved.use_8bit_adam) == (512, 4, True, True)
    assert resolved.steps == 800 and json.dumps(resolved.settings())


def test_the_cli_names_a_default_output_after_the_settings(tmp_path, local_runtime):
    local_runtime.chdir(tmp_path)
    parser = cli.argparse.ArgumentParser()
    cli._fill(parser)
    args = ["lora", "--data", str(shipped_data("lora")), "--profile", "tiny", "--rank", "8"]
    first = cli.config_from(parser.parse_args(args))
    again = cli.config_from(parser.parse_args(args + ["--resume", "latest", "--checkpoint-every", "5"]))
    other = cli.config_from(parser.parse_args(args[:-1] + ["2"]))
    assert first.output == again.output != other.output
    assert first.output.startswith(str(tmp_path / "outputs" / "train" / "lora-")) and first.rank == 8


def test_dreambooth_has_its_own_lora_settings_under_tiny():
    """tiny's LoRA defaults are tuned for 04's style (rank 8, min-SNR); with them 05's subject was never learned."""
    lora = TrainConfig(mode="lora", data="d", output="o", profile="tiny").resolved()
    subject = TrainConfig(mode="dreambooth", data="d", output="o", profile="tiny", instance_prompt="a sks shape")
    subject = subject.resolved()
    assert (lora.rank, lora.snr_gamma) == (8, 5.0) and (subject.rank, subject.snr_gamma) == (4, None)
    assert TrainConfig(mode="dreambooth", data="d", output="o", profile="tiny", instance_prompt="a sks shape",
                       rank=2, snr_gamma=3.0).resolved().rank == 2  # what you set wins
