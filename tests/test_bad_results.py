"""Bad inputs and faults whose right answer is a result, or an error with consequences worth checking on disk:
odd image modes, a diverging run, torn checkpoints, emoji parameters, Ctrl-C, endless time limits, text that could
inject YAML, a manifest that lies. Part of the bad-input catalogue (tests/test_bad_inputs.py counts these)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers import images, runner, tiny
from nbhelpers.checks import ParameterError
from nbhelpers.cli import main
from nbhelpers.train import TrainConfig, checkpoints, data, export, loop, shipped_data

# Image modes PIL's plain convert("RGB") got wrong or that need compositing, and the 8-bit RGB they must become.
MODES = {
    "16-bit grey (I;16)": (lambda: Image.fromarray(np.full((64, 64), 32768, np.uint16)), (128, 128, 128)),
    "32-bit integer grey (I)": (lambda: Image.fromarray(np.full((64, 64), 32768, np.int32)), (128, 128, 128)),
    "float grey 0-1 (F)": (lambda: Image.fromarray(np.full((64, 64), 0.5, np.float32)), (128, 128, 128)),
    "transparent grey (LA)": (lambda: Image.new("LA", (64, 64), (0, 0)), (255, 255, 255)),
    "half-transparent red (RGBA)": (lambda: Image.new("RGBA", (64, 64), (255, 0, 0, 128)), (255, 127, 127)),
    "CMYK cyan": (lambda: Image.new("CMYK", (64, 64), (255, 0, 0, 0)), (0, 255, 255)),
    "1-bit black": (lambda: Image.new("1", (64, 64), 0), (0, 0, 0)),
}


def _palette_with_transparency(path):
    image = Image.new("P", (64, 64), 0)
    image.putpalette([10, 20, 30] * 256)
    image.save(path, transparency=0)
    return path


@pytest.mark.parametrize("mode", list(MODES))
def test_every_image_mode_becomes_the_right_8_bit_rgb(mode, tmp_path):
    make, expected = MODES[mode]
    image = make()
    path = tmp_path / ("a.tif" if image.mode in ("I", "F", "CMYK") else "a.png")  # what PNG cannot hold goes in TIFF
    image.save(path)
    (tmp_path / "a.txt").write_text("a picture")
    [pixels] = data.load_folder(tmp_path, 64).images  # the training path
    assert pixels.dtype == torch.uint8
    assert np.allclose(pixels[:, 32, 32].tolist(), expected, atol=3), (mode, pixels[:, 32, 32].tolist())
    rgb = images.read_rgb(path, "input_image")  # the img2img path
    assert rgb.mode == "RGB" and np.allclose(rgb.getpixel((32, 32)), expected, atol=3)


def test_a_palette_with_a_transparent_colour_becomes_white(tmp_path):
    path = _palette_with_transparency(tmp_path / "p.png")
    assert images.read_rgb(path, "input_image").getpixel((0, 0)) == (255, 255, 255)


def test_img2img_of_a_16_bit_image_returns_grey_not_white(tmp_path):
    from nbhelpers.diffusion import Engine

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((64, 64), 32768, np.uint16)).save(path)
    result = Engine("tiny", say=lambda *_: None).img2img(path, "a grey square", strength=0.01)  # 0 denoising steps
    assert result.images[0].getpixel((10, 10)) == (128, 128, 128)


def _train_config(tmp_path, **changes):
    values = dict(mode="lora", data=str(shipped_data("lora")), output=str(tmp_path / "out"), profile="tiny", steps=5,
                  checkpoint_every=1, validation_every=0, progress=False)
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.slow
def test_a_diverging_run_stops_and_keeps_only_finite_checkpoints(tmp_path, monkeypatch):
    real_step = loop.train_step
    calls = []

    def nan_from_step_3(run, batch):
        mean = real_step(run, batch)
        calls.append(1)
        return [float("nan")] * 3 if len(calls) >= 3 else mean

    monkeypatch.setattr(loop, "train_step", nan_from_step_3)
    with pytest.raises(ParameterError) as error:
        loop.train(_train_config(tmp_path))
    message = str(error.value)
    assert error.value.name == "learning_rate" and "step 3" in message and "step-00000002" in message
    out = tmp_path / "out"
    kept = [p.name for p in checkpoints.complete(out)]
    assert kept == ["step-00000001", "step-00000002"]
    assert not (out / export.LORA_FILE).exists() and not (out / export.KOHYA_FILE).exists()
    from safetensors.torch import load_file

    for checkpoint in checkpoints.complete(out):
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "trainable_0.safetensors").values())


@pytest.mark.slow
def test_learning_rate_1e30_stops_the_cli_with_one_line_and_leaves_nothing(tmp_path, capsys):
    code = main(["train", "lora", "--data", str(shipped_data("lora")), "--output", str(tmp_path / "x1"), "--profile",
                 "tiny", "--steps", "6", "--learning-rate", "1e30", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "learning_rate=1e+30" in err[0] and "step" in err[0], err
    assert not (tmp_path / "x1").exists()  # no checkpoint was finite: no run.json left to block the next attempt


def _fake_checkpoint(folder, config, step, torn=False):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, str(folder / "trainable_0.safetensors"))
    torch.save({"state": 1}, folder / "optimizer.bin")
    (folder / checkpoints.STATE_FILE).write_text(json.dumps({"step": step, "losses": [], "settings": config.settings()}))
    if torn:
        weights = folder / "trainable_0.safetensors"
        weights.write_bytes(weights.read_bytes()[:-10])
    return folder


def test_resume_latest_falls_back_to_the_newest_intact_checkpoint_and_says_so(tmp_path, capsys):
    config = _train_config(tmp_path, resume="latest").resolved()
    checkpoints.write_run(config.output, config)
    root = tmp_path / "out" / "checkpoints"
    _fake_checkpoint(root / "step-00000002", config, 2)
    _fake_checkpoint(root / "step-00000004", config, 4, torn=True)
    start = checkpoints.plan_start(config)
    assert start.kind == "resume" and start.checkpoint.name == "step-00000002"
    said = capsys.readouterr().out
    assert "step-00000004 is damaged" in said and "step-00000002" in said


def test_a_checkpoint_of_the_same_settings_is_accepted(tmp_path):
    config = _train_config(tmp_path).resolved()
    checkpoint = _fake_checkpoint(tmp_path / "elsewhere" / "checkpoints" / "step-00000002", config, 2)
    resumed = _train_config(tmp_path, resume=str(checkpoint), progress=True).resolved()  # progress: not a weight setting
    assert checkpoints.plan_start(resumed).checkpoint == checkpoint


def test_an_emoji_in_a_parameter_reaches_the_notebook_intact():
    escaped = "a red circle 🐱".encode().decode("ascii", "surrogateescape")  # argv under a C locale
    assert runner.parse_parameters([("prompt", escaped)]) == {"prompt": "a red circle 🐱"}
    import yaml  # what papermill reads the parameters file with

    for value in ("a red circle 🐱", "tab\there", "bell\x07", "ÿ"):
        assert yaml.safe_load(runner.yaml_json({"prompt": value})) == {"prompt": value}


@pytest.mark.slow
def test_an_emoji_parameter_runs_a_notebook(tmp_path):
    source = "profile = 'auto'\nseed = 0\noutput_dir = ''\nprompt = 'x'\n"
    writer = ("import json, pathlib\nfolder = pathlib.Path(output_dir) / '01_echo'\nfolder.mkdir(parents=True, "
              "exist_ok=True)\n(folder / 'summary.json').write_text(json.dumps({'prompt': prompt}))\n")
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": source, "outputs": [],
              "execution_count": None},
             {"cell_type": "code", "metadata": {}, "source": writer, "outputs": [], "execution_count": None}]
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "01_echo.ipynb").write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}))
    [result] = runner.run(["01"], out=tmp_path / "run", overrides={"prompt": "a red circle 🐱"}, folder=folder,
                          timeout=float("inf"), echo=print)
    assert result.status == "ok", result.error
    assert result.summary == {"prompt": "a red circle 🐱"}


_REAL_POPEN = subprocess.Popen  # the tests patch subprocess.Popen itself (runner.subprocess is the module)


class _FakePapermill:
    """Popen stand-in: a real child process (so that stopping it can be checked) whose communicate() raises what
    the test asks for, the way a Ctrl-C arrives while the runner waits."""
    started = []

    def __init__(self, command, **kwargs):
        self.real = _REAL_POPEN([sys.executable, "-c", "import time; time.sleep(600)"], **kwargs)
        self.pid, self.returncode = self.real.pid, None
        self.timeouts = []
        _FakePapermill.started.append(self)

    def communicate(self, timeout=None):
        self.timeouts.append(timeout)
        if len(self.timeouts) == 1 and _FakePapermill.raise_first is not None:
            raise _FakePapermill.raise_first
        self.real.wait()
        self.returncode = self.real.returncode
        return "", None


def test_ctrl_c_stops_the_notebook_process_writes_the_report_and_exits_130(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner.subprocess, "Popen", _FakePapermill)
    _FakePapermill.started, _FakePapermill.raise_first = [], KeyboardInterrupt()
    code = main(["run", "00", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 130 and "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    [child] = _FakePapermill.started
    assert child.real.poll() is not None  # stopped, not orphaned
    assert (tmp_path / "run" / "report.html").is_file() and "interrupted" in out


@pytest.mark.parametrize("limit", ["inf", "1e30"])
def test_an_endless_timeout_means_no_limit(limit, tmp_path, monkeypatch):
    monkeypatch.setattr(runner.subprocess, "Popen", _FakePapermill)
    _FakePapermill.started, _FakePapermill.raise_first = [], None

    def stop_soon(self, timeout=None):  # the child exits at once: only the limit passed on matters
        self.timeouts.append(timeout)
        self.real.kill()
        self.real.wait()
        self.returncode = 1
        return "", None

    monkeypatch.setattr(_FakePapermill, "communicate", stop_soon)
    assert main(["run", "00", "--out", str(tmp_path / "run"), "--timeout", limit]) == 1  # failed, not crashed
    assert _FakePapermill.started[0].timeouts == [None]


def test_an_instance_prompt_cannot_inject_into_the_model_card():
    import yaml

    prompt = 'a sks dog\nlicense: mit\n"quoted" | piped'
    config = TrainConfig(mode="dreambooth", data="d", output="o", profile="tiny", instance_prompt=prompt).resolved()
    card = export.model_card(config, "tiny/base", [{"loss": 0.1}], 1.0)
    front = yaml.safe_load(card.split("---")[1])
    assert "license" not in front and front["instance_prompt"] == prompt
    code = card.split("```python\n")[1].split("```")[0]
    compile(code, "card", "exec")  # the snippet is still valid Python
    assert all(line.replace("\\|", "").count("|") == 3 for line in card.splitlines() if line.startswith("| instance_prompt"))


@pytest.mark.parametrize("manifest", [{"builder_version": tiny.BUILDER_VERSION, "files": {}},
                                      {"builder_version": tiny.BUILDER_VERSION, "files": {"config.json": "0" * 64}}])
def test_a_manifest_without_the_model_files_is_not_ready(tmp_path, manifest):
    folder = tmp_path / "mixtral"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    if manifest["files"]:
        import hashlib

        manifest["files"]["config.json"] = hashlib.sha256(b"{}").hexdigest()
    (folder / tiny.MANIFEST).write_text(json.dumps(manifest))
    assert not tiny.is_valid(folder)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(how, tmp_path, capsys, monkeypatch):
    argv = ["run", "--profile", "gpu"] + (["--debug"] if how == "flag" else [])
    if how == "environment":
        monkeypatch.setenv("NBHELPERS_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("nbhelpers run: error: profile=")


# Cases above, as they count in the catalogue (parametrized ones once per parameter): image modes, palette,
# img2img, two diverging runs, fallback, same settings, emoji twice, Ctrl-C, two timeouts, card, two manifests, two
# debug switches.
RESULT_CASES = len(MODES) + 1 + 1 + 2 + 1 + 1 + 2 + 1 + 2 + 1 + 2 + 2
