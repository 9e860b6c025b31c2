"""benchmarks/gpu_suite.py is run by hand on a lent GPU, maybe months apart: its CPU smoke mode keeps it working."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_suite  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    environment = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--device", "cpu", "--smoke",
                           "--out", str(out)], capture_output=True, text=True, env=environment,
                          timeout=3600)  # a hang guard, not a speed target (a busy 2-core machine is slow)
    return done, out


@pytest.mark.slow
def test_smoke_run_measures_every_section(smoke):
    done, out = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["random_weights"] is True and report["smoke"] is True
    assert list(report["sections"]) == list(gpu_suite.SECTIONS)
    for name, row in report["sections"].items():
        assert row["status"] == "ok", (name, row)
        numbers = [v for v in row["figures"].values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert numbers and all(v == v for v in numbers), (name, row)  # numbers, none NaN
    generation = ("sd15_txt2img", "sd15_inpaint", "sdxl_txt2img")
    for name in generation:
        figures = report["sections"][name]["figures"]
        assert figures["it_per_s"] > 0 and figures["peak_gib"] >= figures["weights_gib"] > 0
    for name in ("sd15_lora_step", "sd15_dreambooth_lora_step"):
        assert report["sections"][name]["figures"]["s_per_step"] > 0
    offload = report["sections"]["mixtral_offload"]["figures"]
    assert offload["engine_bytes_per_token"] < offload["accelerate_bytes_per_token"]  # what the cache is for


@pytest.mark.slow
def test_smoke_markdown_has_a_row_with_figures_per_section(smoke):
    _, out = smoke
    text = (out / "gpu_suite.md").read_text()
    assert "SMOKE" in text and "RANDOM weights" in text
    for name in gpu_suite.SECTIONS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert "| ok |" in row and re.search(r"\d+\.\d+", row), row


def test_one_failing_section_still_writes_the_others(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("CUDA out of memory (planted)")

    def fine(self):
        return {"setting": "planted", "figures": {"it_per_s": 1.5}}

    monkeypatch.setattr(gpu_suite.Suite, "sd15_txt2img", broken)
    monkeypatch.setattr(gpu_suite.Suite, "sd15_inpaint", fine)
    report = gpu_suite.main(["--device", "cpu", "--smoke", "--out", str(tmp_path),
                             "--sections", "sd15_txt2img,sd15_inpaint"])
    written = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert written["sections"]["sd15_txt2img"] == {"status": "error", "error": "RuntimeError: CUDA out of memory "
                                                   "(planted)", "seconds": written["sections"]["sd15_txt2img"]["seconds"]}
    assert written["sections"]["sd15_inpaint"]["figures"] == {"it_per_s": 1.5}
    assert "| sd15_txt2img | error |" in (tmp_path / "gpu_suite.md").read_text()


def test_real_sizes_refuse_a_cpu(tmp_path):
    with pytest.raises(SystemExit):
        gpu_suite.main(["--device", "cpu", "--out", str(tmp_path)])
