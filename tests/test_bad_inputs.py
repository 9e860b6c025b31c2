"""The bad-input catalogue: every case must fail with a ParameterError (or, on the command line, exit 2 with one
line and no traceback) that names the parameter or file, before any model is loaded, and must leave every file as
it was (none added, none removed, none changed)."""

import contextlib
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from unittest import mock

import pytest
import torch

import nbhelpers
from nbhelpers import loaders, profiles, runner, safety, tiny
from nbhelpers.checks import ParameterError
from nbhelpers.cli import main
from nbhelpers.diffusion import Engine, masks
from nbhelpers.lab import shapes
from nbhelpers.moe import accounting, balance, context, router, routing
from nbhelpers.plan import plan
from nbhelpers.bench import Grid
from nbhelpers.train import checkpoints
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


def _huge_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG whose header claims side x side pixels: 70 bytes on disk, 400 megapixels if decoded."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) +
                     chunk(b"IEND", b""))
    return path


def _data_with(tmp, name, content) -> Path:
    folder = tmp / "userdata"
    folder.mkdir(exist_ok=True)
    _image(folder, "a.png")
    (folder / name).write_bytes(content) if isinstance(content, bytes) else content(folder / name)
    return folder


def _setup_latin1_caption(tmp):
    return _train(tmp, data=str(_data_with(tmp, "a.txt", "un café rouge".encode("latin-1"))))


def _setup_huge_header(tmp):
    folder = _data_with(tmp, "b.png", _huge_png)
    (folder / "b.txt").write_text("huge")
    (folder / "a.txt").write_text("small")
    return _train(tmp, data=str(folder))


def _fake_checkpoint(folder: Path, config, step: int = 2, torn: bool = False) -> Path:
    """A checkpoint folder shaped like the trainer's (no training needed): settings, weights, optimizer archive."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, str(folder / "trainable_0.safetensors"))
    torch.save({"state": 1}, folder / "optimizer.bin")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "losses": [],
                                                           "settings": config.resolved().settings()}))
    if torn:  # a sync cut short: the weights lose their last bytes
        weights = folder / "trainable_0.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    return folder


def _config(tmp, **changes):
    values = {"mode": "lora", "data": str(tmp / "data"), "output": str(tmp / "out"), "profile": "tiny", "steps": 2}
    values.update(changes)
    return TrainConfig(**values)


def _setup_other_settings_checkpoint(tmp):
    _train(tmp)  # creates the data folder
    checkpoint = _fake_checkpoint(tmp / "old" / "checkpoints" / "step-00000002", _config(tmp, seed=7))
    return _train(tmp, seed=99, learning_rate=0.01, resume=str(checkpoint), output=str(tmp / "new"))


def _setup_torn_checkpoint(tmp):
    _train(tmp)
    checkpoint = _fake_checkpoint(tmp / "old" / "checkpoints" / "step-00000002", _config(tmp), torn=True)
    return _train(tmp, resume=str(checkpoint), output=str(tmp / "new"))


def _setup_only_checkpoint_torn(tmp):
    _train(tmp)
    config = _config(tmp).resolved()
    checkpoints.write_run(config.output, config)
    _fake_checkpoint(tmp / "out" / "checkpoints" / "step-00000002", config, torn=True)
    return _train(tmp, resume="latest")


def _setup_class_data_file(tmp):
    (tmp / "classes").write_text("not a folder")
    return _train(tmp, mode="dreambooth", instance_prompt="a sks shape", class_prompt="a shape",
                  class_data=str(tmp / "classes"))


def _setup_output_file(tmp):
    (tmp / "result").write_text("my notes")
    return _train(tmp, output=str(tmp / "result"))


def _setup_output_under_file(tmp):
    (tmp / "result").write_text("my notes")
    return _train(tmp, output=str(tmp / "result" / "run"))


def _notebooks(tmp, name: str, text: str) -> Path:
    folder = tmp / "nbs"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def _parameters_notebook(source: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source,
                                  "outputs": [], "execution_count": None}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _setup_not_json_notebook(tmp):
    folder = _notebooks(tmp, "01_broken.ipynb", "this is not JSON {")
    return lambda: runner.run(["01"], out=tmp / "run", folder=folder, echo=print)


def _setup_syntax_error_notebook(tmp):
    folder = _notebooks(tmp, "01_typo.ipynb", _parameters_notebook("profile = 'auto'\nsteps = = 3\n"))
    return lambda: runner.run(["01"], out=tmp / "run", folder=folder, echo=print)


def _setup_truncated_config(tmp):
    import shutil

    from nbhelpers.paths import data_dir

    shutil.copytree(data_dir() / "configs", tmp / "configs")
    config = tmp / "configs" / "mixtral-8x7b.json"
    config.write_text(config.read_text()[:40])

    def call():
        with mock.patch("nbhelpers.plan.configs.data_dir", return_value=tmp), \
                mock.patch("nbhelpers.moe.accounting.data_dir", return_value=tmp):
            plan("mixtral-8x7b")
    return call


def _setup_config_without_type(tmp):
    (tmp / "config.json").write_text(json.dumps({"hidden_size": 64}))
    return lambda: accounting.load_config(str(tmp / "config.json"))


def _setup_cache_is_file(tmp):
    (tmp / "cache").write_text("not a folder")

    def call():
        with mock.patch.dict(os.environ, {"NBHELPERS_CACHE": str(tmp / "cache")}):
            tiny.ensure("sd")
    return call


def _setup_tiny_out_under_file(tmp):
    (tmp / "cache").write_text("not a folder")
    return lambda: tiny.ensure("mixtral", tmp / "cache" / "tiny")


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
    "unknown tiny model": ("tiny model", lambda tmp: lambda: __import__("nbhelpers.tiny").tiny.ensure("flux", tmp)),
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
    # round two (issue 14): files named, outputs checked first, checkpoints compared before loading
    "train: caption in Latin-1": ("data", _setup_latin1_caption),
    "train: PNG header claiming 20000x20000": ("data", _setup_huge_header),
    "train: data is a file": ("data", lambda tmp: _train(tmp, data=str(_image(tmp, "one.png")))),
    "train: target module that does not exist": ("target_modules", lambda tmp: _train(tmp, target_modules=(
        "to_q", "no_such_layer"))),
    "train: target module that is a norm": ("target_modules", lambda tmp: _train(tmp, target_modules=("norm1",))),
    "train: output is a file": ("output", _setup_output_file),
    "train: output inside a file": ("output", _setup_output_under_file),
    "train: class_data is a file": ("class_data", _setup_class_data_file),
    "train: checkpoint of other settings": ("resume", _setup_other_settings_checkpoint),
    "train: torn checkpoint named explicitly": ("resume", _setup_torn_checkpoint),
    "train: resume latest whose only checkpoint is torn": ("resume", _setup_only_checkpoint_torn),
    "train: resume from a folder that is no checkpoint": ("resume", lambda tmp: _train(tmp, resume=str(tmp))),
    "train: negative seed": ("seed", lambda tmp: _train(tmp, seed=-1)),
    "train: warm-up longer than the run": ("warmup_steps", lambda tmp: _train(tmp, warmup_steps=5)),
    "train: batch size 0": ("batch_size", lambda tmp: _train(tmp, batch_size=0)),
    "train: unknown scheduler": ("lr_scheduler", lambda tmp: _train(tmp, lr_scheduler="warp")),
    "train: NaN learning rate": ("learning_rate", lambda tmp: _train(tmp, learning_rate=float("nan"))),
    "train: lone surrogate in the instance prompt": ("instance_prompt", lambda tmp: _train(
        tmp, mode="dreambooth", instance_prompt="a sks \ud83d dog")),
    "train: keep no checkpoints": ("keep_checkpoints", lambda tmp: _train(tmp, keep_checkpoints=0)),
    "train: negative min-SNR gamma": ("snr_gamma", lambda tmp: _train(tmp, snr_gamma=-5.0)),
    "train: zero LoRA alpha": ("lora_alpha", lambda tmp: _train(tmp, lora_alpha=0)),
    "train: unknown profile": ("profile", lambda tmp: _train(tmp, profile="T4")),
    "train: text encoder with a full fine-tune": ("train_text_encoder", lambda tmp: _train(
        tmp, mode="dreambooth", instance_prompt="a sks dog", full_finetune=True, train_text_encoder=True)),
    "img2img: PNG header claiming 20000x20000": ("input_image", lambda tmp: _engine_call(
        "img2img", _huge_png(tmp / "huge.png"), "a cat", strength=0.5)),
    "img2img: a folder instead of an image": ("input_image", lambda tmp: _engine_call("img2img", tmp, "a cat")),
    "img2img: no image at all": ("input_image", lambda tmp: _engine_call("img2img", None, "a cat")),
    "inpaint: unreadable mask": ("mask", lambda tmp: _engine_call("inpaint", _image(tmp), tmp / "missing-mask.png",
                                                                  "a")),
    "inpaint: unknown model": ("model", lambda tmp: _engine_call("inpaint", _image(tmp), _image(tmp, "m.png"), "a",
                                                                 model="sdxl")),
    "inpaint: negative padding crop": ("padding_mask_crop", lambda tmp: _engine_call(
        "inpaint", _image(tmp), _image(tmp, "m.png"), "a", padding_mask_crop=-1)),
    "txt2img: lone surrogate in the prompt": ("prompt", lambda tmp: _engine_call("txt2img", "a cat \udcf0")),
    "txt2img: NaN guidance": ("guidance_scale", lambda tmp: _engine_call("txt2img", "a", guidance_scale=float("nan"))),
    # run
    "run: -p profile": ("-p profile", lambda tmp: lambda: runner.run(["00"], out=tmp / "r", overrides={
        "profile": "large"})),
    "run: -p output_dir": ("-p output_dir", lambda tmp: lambda: runner.run(["00"], out=tmp / "r", overrides={
        "output_dir": "X"})),
    "run: duplicate -p name": ("-p steps", lambda tmp: lambda: runner.parse_parameters([("steps", "1"),
                                                                                       ("steps", "2")])),
    "run: lone surrogate in a -p value": ("-p prompt", lambda tmp: lambda: runner.run(
        ["02"], out=tmp / "r", overrides={"prompt": "cat \ud83d"})),
    "run: notebook that is not JSON": ("notebook", _setup_not_json_notebook),
    "run: syntax error in a parameters cell": ("notebook", _setup_syntax_error_notebook),
    "run: folder without notebooks": ("notebooks folder", lambda tmp: lambda: runner.select([], tmp)),
    "run: NaN timeout": ("timeout", lambda tmp: lambda: runner.run(["00"], out=tmp / "r", timeout=float("nan"))),
    # mixture of experts
    "router: NaN logits": ("router_logits", lambda tmp: lambda: router.route(
        torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), top_k=2)),
    "balance loss: NaN logits": ("router_logits", lambda tmp: lambda: balance.load_balancing_loss(
        (torch.full((4, 8), float("nan")),), 8, 2)),
    "balance loss: all-zero attention mask": ("attention_mask", lambda tmp: lambda: balance.load_balancing_loss(
        (torch.zeros(4, 8),), 8, 2, attention_mask=torch.zeros(1, 4))),
    "balance loss: mask of the wrong length": ("attention_mask", lambda tmp: lambda: balance.load_balancing_loss(
        (torch.zeros(4, 8),), 8, 2, attention_mask=torch.ones(1, 3))),
    "balance loss: wrong expert count": ("num_experts", lambda tmp: lambda: balance.load_balancing_loss(
        (torch.zeros(4, 8),), 4, 2)),
    "MoE block: wrong hidden size": ("hidden_states", lambda tmp: lambda: router.sparse_moe_forward(
        router.random_mixtral_block(hidden=64), torch.zeros(1, 3, 32))),
    "MoE block: 2-D hidden states": ("hidden_states", lambda tmp: lambda: router.sparse_moe_forward(
        router.random_mixtral_block(hidden=64), torch.zeros(3, 64))),
    "MoE block: NaN hidden states": ("hidden_states", lambda tmp: lambda: router.sparse_moe_forward(
        router.random_mixtral_block(hidden=64), torch.full((1, 3, 64), float("nan")))),
    "KV plan: negative tokens": ("tokens", lambda tmp: lambda: context.kv_cache_bytes(
        accounting.load_config("mixtral-8x7b"), -1)),
    # plan, bench, tiny
    "plan: truncated shipped config": ("model config", _setup_truncated_config),
    "plan: config without model_type": ("model config", _setup_config_without_type),
    "bench: unknown model": ("model", lambda tmp: lambda: Grid(models=["sd9"]).check()),
    "bench: empty sampler list": ("samplers", lambda tmp: lambda: Grid(samplers=[]).check()),
    "tiny: NBHELPERS_CACHE is a file": ("NBHELPERS_CACHE", _setup_cache_is_file),
    "tiny: cache folder inside a file": ("--out", _setup_tiny_out_under_file),
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
    # round two (issue 14)
    "run: -p profile": (["run", "00", "--profile", "tiny", "-p", "profile", "large"], "-p profile"),
    "run: -p output_dir": (["run", "00", "-p", "output_dir", "X"], "-p output_dir"),
    "run: the same -p twice": (["run", "02", "-p", "steps", "1", "-p", "steps", "2"], "-p steps"),
    "run: NaN timeout": (["run", "00", "--timeout", "nan"], "timeout"),
    "run: --out is a file": (["run", "00", "--out", "FILE"], "--out"),
    "run: notebook that is not JSON": (["run", "--dir", "NOTJSON"], "01_broken.ipynb"),
    "run: syntax error in a parameters cell": (["run", "--dir", "SYNTAX"], "01_typo.ipynb"),
    "bench: --out is an existing file": (["bench", "--models", "tiny", "--out", "FILE"], "--out"),
    "bench: steps not integers": (["bench", "--steps", "four"], "steps"),
    "bench: unknown model": (["bench", "--models", "sd9"], "model"),
    "train: no such target module": (["train", "lora", "--data", "DATA", "--output", "OUT", "--target-modules",
                                      "no_such_layer"], "target_modules"),
    "train: --output is a file": (["train", "lora", "--data", "DATA", "--output", "FILE"], "output"),
    "train: --class-data is a file": (["train", "dreambooth", "--data", "DATA", "--output", "OUT",
                                       "--instance-prompt", "a sks shape", "--class-prompt", "a shape",
                                       "--class-data", "FILE"], "class_data"),
    "train: --resume of a folder that is no checkpoint": (["train", "lora", "--data", "DATA", "--output", "OUT",
                                                           "--resume", "DATA"], "resume"),
    "train: negative seed": (["train", "lora", "--data", "DATA", "--output", "OUT", "--seed", "-1"], "seed"),
    "train: caption in Latin-1": (["train", "lora", "--data", "LATIN", "--output", "OUT"], "a.txt"),
    "train: PNG header claiming 20000x20000": (["train", "lora", "--data", "HUGE", "--output", "OUT"], "huge.png"),
    "train: NaN learning rate": (["train", "lora", "--data", "DATA", "--output", "OUT", "--learning-rate", "nan"],
                                 "learning_rate"),
    "train: unknown scheduler": (["train", "lora", "--data", "DATA", "--output", "OUT", "--lr-scheduler", "warp"],
                                 "lr_scheduler"),
    "tiny: --out inside a file": (["tiny", "--out", "FILE/tiny"], "--out"),
    "plan: unknown model (plain)": (["plan", "mixtral"], "model"),
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


def _files(folder: Path) -> dict:
    """Every file under `folder` with a digest of its bytes: a bad input may add, remove or change nothing."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


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
    monkeypatch.delenv("NBHELPERS_DEBUG", raising=False)
    data = tmp_path / "DATA"
    data.mkdir()
    _image(data, "a.png")
    (tmp_path / "FILE").write_text("the user's own file")
    latin = tmp_path / "LATIN"
    latin.mkdir()
    _image(latin, "a.png")
    (latin / "a.txt").write_bytes("un café rouge".encode("latin-1"))
    huge = tmp_path / "HUGE"
    huge.mkdir()
    _huge_png(huge / "huge.png")
    _notebooks(tmp_path, "01_broken.ipynb", "this is not JSON {").rename(tmp_path / "NOTJSON")
    _notebooks(tmp_path, "01_typo.ipynb", _parameters_notebook("steps = = 3\n")).rename(tmp_path / "SYNTAX")
    places = ("DATA", "MISSING", "OUT", "FILE", "LATIN", "HUGE", "NOTJSON", "SYNTAX")
    argv = [str(tmp_path / a) if a.split("/")[0] in places else a for a in argv]
    before = _files(tmp_path)
    with no_heavy_work():
        assert main(argv) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert "Traceback" not in out + err
    assert len(err.splitlines()) == 1 and parameter in err and "is not allowed" in err, err
    assert _files(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("case", list(NOTEBOOKS))
def test_notebook_bad_parameter(case, tmp_path):
    name, parameters, parameter = NOTEBOOKS[case]
    [result] = runner.run([name], profile="tiny", out=tmp_path, overrides=parameters, timeout=300, echo=print)
    assert result.status == "failed" and "ParameterError" in result.error and f"{parameter}=" in result.error
    assert result.summary is None  # no summary of a run that did not happen


def test_the_catalogue_has_at_least_100_cases():
    from test_bad_results import RESULT_CASES

    assert len(API) + len(CLI) + len(NOTEBOOKS) + RESULT_CASES >= 100
