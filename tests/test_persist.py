import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbhelpers import persist
from nbhelpers.checks import ParameterError


def test_atomic_write_replaces_the_file(tmp_path):
    target = tmp_path / "a.json"
    persist.atomic_write_json(target, {"v": 1})
    persist.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_write_interrupted_by_an_error_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    persist.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with persist.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disconnected")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


WRITER = """
import sys, time
import torch
from safetensors.torch import save
from nbhelpers import persist
new = save({"w": torch.full((1000,), 2.0)})
with persist.atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as handle:
        handle.write(new[: len(new) // 2])  # the power goes out halfway through the save
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_save_killed_midway_leaves_the_old_weights_loadable(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    target = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(1000)}, str(target))
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert torch.equal(load_file(str(target))["w"], torch.ones(1000))
    assert len(list(tmp_path.glob(".weights.safetensors.tmp-*"))) == 1  # the killed writer's half file
    save_file({"w": torch.zeros(1000)}, str(target))  # (not through nbhelpers: the stale file stays)
    persist.atomic_write_bytes(target, (tmp_path / "weights.safetensors").read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]  # the next save cleans up after it


def test_atomic_folder_replaces_a_whole_folder(tmp_path):
    folder = tmp_path / "model"
    for version in ("1", "2"):
        with persist.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(version)
    assert (folder / "config.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_workspace_per_runtime(local_runtime, tmp_path):
    local_runtime.chdir(tmp_path)
    assert persist.workspace() == (tmp_path / "outputs").resolve()
    assert persist.workspace(tmp_path / "mine") == (tmp_path / "mine").resolve()
    local_runtime.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    local_runtime.setattr(persist, "KAGGLE_WORKSPACE", tmp_path / "kaggle" / "working")
    assert persist.workspace() == (tmp_path / "kaggle" / "working" / "outputs").resolve()


def test_workspace_on_colab_uses_drive_once_mounted(local_runtime, tmp_path):
    local_runtime.setenv("COLAB_RELEASE_TAG", "release-colab_20260801")
    local_runtime.chdir(tmp_path)
    local_runtime.setattr(persist, "DRIVE_MOUNT", tmp_path / "drive")
    local_runtime.setattr(persist, "DRIVE_WORKSPACE", tmp_path / "drive" / "MyDrive" / "nbhelpers")
    assert persist.workspace() == (tmp_path / "outputs").resolve()  # not mounted: local disk
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    assert persist.workspace() == (tmp_path / "drive" / "MyDrive" / "nbhelpers").resolve()
    assert persist.default_model_cache() == Path("/content/hf_cache")  # the cache never goes to Drive


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ParameterError, match="output_dir=.*must be a writable folder"):
        persist.workspace(blocker / "sub")


def test_model_cache_is_set_before_libraries_read_it(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HOME", raising=False)
    assert persist.configure_model_cache(tmp_path / "cache") == tmp_path / "cache"
    assert os.environ["HF_HOME"] == str(tmp_path / "cache")
    assert persist.configure_model_cache() == tmp_path / "cache"  # an existing choice is kept


def test_summary_requires_the_contract_keys_and_becomes_plain_json(tmp_path):
    import numpy as np
    import torch

    with pytest.raises(ValueError, match="timings"):
        persist.write_summary(tmp_path, {"notebook": "x", "profile": "tiny", "seed": 0, "parameters": {}})
    path = persist.write_summary(tmp_path, {"notebook": "x", "profile": "tiny", "seed": 0, "parameters": {},
                                            "timings": {"a": np.float32(1.5)}, "loss": torch.tensor(0.25),
                                            "image": tmp_path / "a.png", "nan": float("nan")})
    data = json.loads(path.read_text())
    assert data["timings"]["a"] == 1.5 and data["loss"] == 0.25 and data["image"].endswith("a.png")
    assert data["nan"] is None
