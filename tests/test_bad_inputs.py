"""The bad-input catalogue: every case must fail with a ParameterError (or, on the command line, exit 2 with one
line) that names the parameter, before any model is loaded, and must leave no file behind."""

import contextlib
from pathlib import Path

import pytest
import torch

import nbhelpers
from nbhelpers import loaders, profiles, runner, safety
from nbhelpers.checks import ParameterError
from nbhelpers.cli import main
from nbhelpers.diffusion import Engine, masks
from nbhelpers.lab import shapes
from nbhelpers.moe import accounting, context, router, routing
from nbhelpers.plan import plan
from nbhelpers.train.config import TrainConfig
from nbhelpers.train.loop import train


def _image(folder: Path, name: str = "in.png", size=(64, 64)) -> Path:
    path = folder / name
    shapes.draw(shapes.ShapeSpec("red", "circle"), size[0]).resize(size).save(path)
    return path


def _train(tmp: Path, **changes):
    data = tmp / "data"
    if not data.exists():
        data.mkdir()
        _image(data, "a.png")
        (data / "a.txt").write_text("a red circle")
    values = {"mode": "lora", "data": str(data), "output": str(tmp / "out"), "profile": "tiny", "steps": 2}
    values.update(changes)
    return lambda: train(TrainConfig(**values))


def _engine_call(method, *args, **kwargs):
    return lambda: getattr(Engine("tiny"), method)(*args, **kwargs)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))


def _setup_empty(tmp):
    (tmp / "empty").mkdir()
    return _train(tmp, data=str(tmp / "empty"))


def _setup_not_images(tmp):
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    return _train(tmp, data=str(folder))


def _setup_corrupt(tmp):
    folder = tmp / "corrupt"
    folder.mkdir()
    good = _image(tmp, "good.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 3])
    return _train(tmp, data=str(folder))


def _setup_orphan_caption(tmp):
    folder = tmp / "captions"
    folder.mkdir()
    _image(folder, "a.png")
    (folder / "b.txt").write_text("a caption without its image")
    return _train(tmp, data=str(folder))


def _setup_other_run(tmp):
    train(TrainConfig(mode="lora", data=str(_train(tmp) and tmp / "data"), output=str(tmp / "out"),
                      profile="tiny", steps=1, checkpoint_every=1, validation_every=0, progress=False))
    return _train(tmp, rank=8, steps=1)


def _setup_mask(tmp):
    image, mask = _image(tmp, "in.png"), tmp / "mask.png"
    masks.shape((32, 32), (4, 4, 20, 20)).save(mask)
    return _engine_call("inpaint", image, mask, "a blue square")


def _setup_unreadable(tmp):
    bad = tmp / "photo.png"
    bad.write_text("not an image")
    return _engine_call("img2img", bad, "a cat")


def _setup_pickle(tmp):
    path = tmp / "lora.ckpt"
    torch.save({"w": torch.ones(1)}, path)
    return lambda: safety.load_state_dict(path)


def _setup_readonly_output(tmp):
    blocker = tmp / "a-file"
    blocker.write_text("")
    return lambda: nbhelpers.start("02_txt2img", profile="tiny", output_dir=str(blocker / "out"))


API = {
    # profiles and the notebook contract
    "unknown profile": ("profile", lambda tmp: lambda: profiles.get_profile("gpu")),
    "start: unknown profile": ("profile", lambda tmp: lambda: nbhelpers.start("00_setup", profile="T4")),
    "start: negative seed": ("seed", lambda tmp: lambda: nbhelpers.start("00_setup", profile="tiny", seed=-3)),
    "start: output folder not writable": ("output_dir", _setup_readonly_output),
    "unknown task": ("task", lambda tmp: lambda: profiles.get_profile("tiny").model("video")),
    "unknown tiny model": ("tiny model", lambda tmp: lambda: __import__("nbhelpers.tiny").tiny.ensure("sdxl", tmp)),
    "unknown notebook": ("notebook", lambda tmp: lambda: runner.select(["42"])),
    # generation
    "width not a multiple of 8": ("width", lambda tmp: _engine_call("txt2img", "a cat", width=100)),
    "height beyond the profile's limit": ("height", lambda tmp: _engine_call("txt2img", "a cat", height=4096)),
    "steps below 1": ("steps", lambda tmp: _engine_call("txt2img", "a cat", steps=0)),
    "negative CFG": ("guidance_scale", lambda tmp: _engine_call("txt2img", "a cat", guidance_scale=-1)),
    "unknown sampler": ("sampler", lambda tmp: _engine_call("txt2img", "a cat", sampler="Euler b")),
    "zero images": ("num_images", lambda tmp: _engine_call("txt2img", "a cat", num_images=0)),
    "seed not an integer": ("seed", lambda tmp: _engine_call("txt2img", "a cat", seed=1.5)),
    "strength above 1": ("strength", lambda tmp: _engine_call("img2img", _image(tmp), "a cat", strength=1.5)),
    "strength below 0": ("strength", lambda tmp: _engine_call("inpaint", _image(tmp), _image(tmp, "m.png"), "a",
                                                              strength=-0.1)),
    "mask size differs from the image": ("mask", _setup_mask),
    "unreadable image file": ("input_image", _setup_unreadable),
    "missing image file": ("input_image", lambda tmp: _engine_call("img2img", tmp / "nope.png", "a cat")),
    "input image of an odd size": ("input_image", lambda tmp: _engine_call("img2img", _image(tmp, size=(70, 64)), "a")),
    "negative mask blur": ("mask_blur", lambda tmp: _engine_call("inpaint", _image(tmp), _image(tmp, "m.png"), "a",
                                                                 mask_blur=-2)),
    # mixture of experts
    "top-k larger than the expert count": ("top_k", lambda tmp: lambda: router.route(torch.zeros(3, 8), top_k=9)),
    "routing of an unsupported architecture": ("model architecture",
                                              lambda tmp: lambda: routing.capture_routing(_llama(), None, "hi")),
    "shapes: unknown colour": ("colour", lambda tmp: lambda: shapes.ShapeSpec("pink", "circle")),
    "KV plan: unknown dtype": ("dtype", lambda tmp: lambda: context.kv_cache_bytes(
        accounting.load_config("mixtral-8x7b"), 1024, dtype="int3")),
    # planning and benchmarks
    "plan: unknown model": ("model", lambda tmp: lambda: plan("sd4")),
    "plan: unknown GPU": ("gpu", lambda tmp: lambda: plan("sd15", gpu="h800")),
    # training
    "train: missing data folder": ("data", lambda tmp: _train(tmp, data=str(tmp / "missing"))),
    "train: empty data folder": ("data", _setup_empty),
    "train: files that are not images": ("data", _setup_not_images),
    "train: corrupt image": ("data", _setup_corrupt),
    "train: caption without image": ("data", _setup_orphan_caption),
    "train: rank below 1": ("rank", lambda tmp: _train(tmp, rank=0)),
    "train: non-positive learning rate": ("learning_rate", lambda tmp: _train(tmp, learning_rate=0.0)),
    "train: zero steps": ("steps", lambda tmp: _train(tmp, steps=0)),
    "train: resume latest without a checkpoint": ("resume", lambda tmp: _train(tmp, resume="latest")),
    "train: output holds another run": ("output", _setup_other_run),
    "train: DreamBooth without instance prompt": ("instance_prompt", lambda tmp: _train(tmp, mode="dreambooth")),
    "train: resolution not a multiple of 8": ("resolution", lambda tmp: _train(tmp, resolution=100)),
    # security
    "pickled weights": ("weights", _setup_pickle),
}

CLI = {
    "run: unknown profile": (["run", "--profile", "gpu"], "profile"),
    "run: unknown notebook": (["run", "99_nothing"], "notebook"),
    "run: parameter no notebook defines": (["run", "02", "-p", "stepz", "20"], "-p stepz"),
    "run: timeout below 1 s": (["run", "00", "--timeout", "0"], "timeout"),
    "plan: unknown model": (["plan", "sd4"], "model"),
    "plan: unknown GPU": (["plan", "sd15", "--gpu", "h800"], "gpu"),
    "bench: zero steps": (["bench", "--models", "tiny", "--steps", "0"], "steps"),
    "bench: negative batch": (["bench", "--models", "tiny", "--batches", "-1"], "batch"),
    "train: rank below 1": (["train", "lora", "--data", "DATA", "--output", "OUT", "--rank", "0"], "rank"),
    "train: missing data": (["train", "lora", "--data", "MISSING", "--output", "OUT"], "data"),
    "train: negative learning rate": (["train", "lora", "--data", "DATA", "--output", "OUT", "--learning-rate", "-1"],
                                      "learning_rate"),
}

NOTEBOOKS = {
    "02: width not a multiple of 8": ("02_txt2img", {"width": 100}, "width"),
    "03: strength above 1": ("03_inpainting", {"strength": 1.5}, "strength"),
    "01: empty prompt": ("01_moe_inference", {"prompt": ""}, "prompt"),
}


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Inside `with no_heavy_work():`, any model load fails the test (setups may still train or load)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    @contextlib.contextmanager
    def guard():
        with monkeypatch.context() as patch:
            patch.setattr(loaders, "load_diffusion", refuse)
            patch.setattr(loaders, "load_chat", refuse)
            patch.setattr("nbhelpers.train.loop.load_base", refuse)
            yield

    return guard


def _files(folder: Path) -> set:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(API))
def test_api_bad_input(case, tmp_path, monkeypatch, no_heavy_work):
    parameter, setup = API[case]
    monkeypatch.chdir(tmp_path)
    call = setup(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(ParameterError) as raised, no_heavy_work():
        call()
    message = str(raised.value)
    assert parameter in raised.value.name and message.startswith(raised.value.name), message
    assert "\n" not in message and len(message) < 400
    assert _files(tmp_path) == before, "a bad input left files behind"


@pytest.mark.parametrize("case", list(CLI))
def test_cli_bad_input(case, tmp_path, monkeypatch, capsys, no_heavy_work):
    argv, parameter = CLI[case]
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "DATA"
    data.mkdir()
    _image(data, "a.png")
    argv = [str(tmp_path / a) if a in ("DATA", "MISSING", "OUT") else a for a in argv]
    before = _files(tmp_path)
    with no_heavy_work():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and parameter in err and "is not allowed" in err, err
    assert _files(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", list(NOTEBOOKS))
def test_notebook_bad_parameter(case, tmp_path):
    name, parameters, parameter = NOTEBOOKS[case]
    [result] = runner.run([name], profile="tiny", out=tmp_path, overrides=parameters, timeout=300, echo=print)
    assert result.status == "failed" and "ParameterError" in result.error and f"{parameter}=" in result.error
    assert result.summary is None  # no summary of a run that did not happen


def test_the_catalogue_has_at_least_40_cases():
    assert len(API) + len(CLI) + len(NOTEBOOKS) >= 40
