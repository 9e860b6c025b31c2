"""The benchmark harness: grid checks, a tiny run through `nbhelpers bench`, CSV/markdown/plot outputs."""

import csv

import pytest

from nbhelpers import cli
from nbhelpers.bench import Grid, markdown
from nbhelpers.checks import ParameterError


@pytest.mark.parametrize("change, name", [
    ({"steps": [0]}, "steps"), ({"batches": [-1]}, "batch"), ({"models": ["sd4"]}, "model"),
    ({"samplers": ["Magic"]}, "sampler"), ({"resolutions": [100]}, "resolution"), ({"steps": []}, "steps"),
    ({"dtypes": ["int3"]}, "dtype"), ({"attention": ["flash9"]}, "attention"), ({"repeats": 0}, "repeats"),
])
def test_impossible_grids_fail_before_any_model_work(change, name):
    with pytest.raises(ParameterError) as error:
        Grid(**change).check()
    assert error.value.name == name


def test_grid_points_are_the_product_of_the_axes():
    grid = Grid(steps=[4, 8], samplers=["Euler", "DPM++ 2M"], batches=[1, 2]).check()
    assert len(grid.points()) == 8


def test_cli_bench_tiny_writes_csv_markdown_and_plot(tmp_path, capsys):
    code = cli.main(["bench", "--models", "tiny", "--steps", "2,3", "--samplers", "Euler", "--repeats", "1",
                     "--warmup", "0", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["steps"] for r in rows] == ["2", "3"]
    assert all(float(r["it_per_s"]) > 0 and float(r["s_per_image"]) > 0 for r in rows)
    assert rows[0]["peak_kind"] == "peak RSS rise"
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert "| tiny |" in (tmp_path / "results.md").read_text()
    assert "results:" in capsys.readouterr().out


def test_cli_bench_bad_grid_is_one_clear_line(capsys):
    assert cli.main(["bench", "--steps", "0"]) == 2
    assert cli.main(["bench", "--batches", "-1"]) == 2
    assert cli.main(["bench", "--steps", "four"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "steps" in err[0] and "batch" in err[1]


def test_markdown_table():
    text = markdown([{"model": "tiny", "it_per_s": 3.0}], columns=("model", "it_per_s"))
    assert text.splitlines()[2] == "| tiny | 3.0 |"


def test_train_step_benchmark_runs_both_modes_and_writes_its_figures(tmp_path):
    """The script behind the trainer's speed target runs end to end in both modes (short runs: the figure itself
    is not asserted here, speed targets live in the benchmark's output)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "bench_train_step.py"
    for mode, extra in (("steps", ["--pairs", "6"]), ("whole-runs", ["--whole-runs", "--rounds", "2", "--steps", "6"])):
        out = tmp_path / f"{mode}.json"
        done = subprocess.run([sys.executable, str(script), *extra, "--json", str(out)], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        figures = json.loads(out.read_text())
        assert figures["mode"] == mode and figures["clock"] == "cpu" and figures["ratio"] > 0
        assert figures["trainer_ms"] > 0 and figures["minimal_ms"] > 0
        assert figures["steps_per_side"] == (6 if mode == "steps" else 2 * (6 - 4))
        assert "ratio trainer / minimal" in done.stdout


def test_training_rows_use_the_profile_settings_and_check_the_method(tmp_path):
    from nbhelpers.bench import training

    config = training.config_for("tiny", None, "dreambooth", 3, tmp_path / "row")
    assert config.prior_preservation and config.steps == 3 and config.rank == 4  # tiny's DreamBooth rank
    assert training.config_for("tiny", None, "lora", 3, tmp_path / "row").rank == 8
    with pytest.raises(ParameterError) as error:
        training.config_for("tiny", None, "textual-inversion", 3, tmp_path / "row")
    assert error.value.name == "method"
    assert training.planner_model("t4", None) == "sd15" and training.planner_model("tiny", None) == "tiny-sd"
    assert training.planner_model("t4", "train_sdxl") == "sdxl" and training.planner_model("tiny", "tiny:sdxl") == "tiny-sdxl"
    assert training.planner_model("t4", "my/model") is None
