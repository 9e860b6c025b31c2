import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nbhelpers import runner
from nbhelpers.checks import ParameterError
from nbhelpers.cli import main


def _notebook(path, body: str, stem: str):
    params = new_code_cell('profile = "auto"\nseed = 0\noutput_dir = ""  # "" = the default\nsteps = 3  # None = the profile default')
    params.metadata["tags"] = ["parameters"]
    finish = (f"import nbhelpers\nrun = nbhelpers.start({stem!r}, profile=profile, seed=seed, output_dir=output_dir)\n"
              "run.finish(steps=steps)")
    nb = new_notebook(cells=[params, new_code_cell(body), new_code_cell(finish)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def folder(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _notebook(notebooks / "90_good.ipynb", "value = steps * 2", "90_good")
    _notebook(notebooks / "91_broken.ipynb", "1 / 0", "91_broken")
    _notebook(notebooks / "92_slow.ipynb", "import time\ntime.sleep(120)", "92_slow")
    return notebooks


def test_failing_notebook_is_reported_and_exits_non_zero(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "90", "91_broken", "--dir", str(folder), "--out", str(out), "-p", "steps", "5"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "90_good" in printed and "91_broken" in printed and "ZeroDivisionError" in printed
    report = (out / "report.md").read_text()
    assert "1 of 2 notebooks passed" in report and "ZeroDivisionError: division by zero" in report
    assert "ZeroDivisionError" in (out / "report.html").read_text()
    summary = json.loads((out / "90_good" / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["profile"] == "tiny"  # -p reached the notebook
    assert (out / "executed" / "91_broken.ipynb").is_file()  # the failed notebook is kept to open


def test_a_notebook_past_its_time_limit_is_stopped(folder, tmp_path):
    results = runner.run(["92"], folder=folder, out=tmp_path / "run", timeout=8, echo=lambda line: None)
    assert results[0].status == "timeout" and results[0].seconds < 60


def test_bad_input_gives_one_clear_line(folder, tmp_path, capsys):
    assert main(["run", "nope", "--dir", str(folder), "--out", str(tmp_path)]) == 2
    assert "notebook='nope' is not allowed: choose one of 90_good, 91_broken, 92_slow" in capsys.readouterr().err
    assert main(["run", "90", "--dir", str(folder), "--out", str(tmp_path), "-p", "stepz", "1"]) == 2
    err = capsys.readouterr().err
    assert "-p stepz" in err and "steps" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "--profile", "huge", "--dir", str(folder), "--out", str(tmp_path)]) == 2
    assert "profile='huge'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "90", "--dir", str(folder), "--out", str(blocker / "out")]) == 2
    assert "must be a writable folder" in capsys.readouterr().err


def test_values_from_the_command_line():
    assert runner.parse_value("20") == 20
    assert runner.parse_value("7.5") == 7.5
    assert runner.parse_value("true") is True
    assert runner.parse_value("None") is None
    assert runner.parse_value("[1, 2]") == [1, 2]
    assert runner.parse_value("a red circle") == "a red circle"


def test_select_accepts_number_stem_or_file_name(folder):
    assert [p.stem for p in runner.select(["90", "91_broken.ipynb"], folder)] == ["90_good", "91_broken"]
    with pytest.raises(ParameterError):
        runner.select(["9"], folder)


def test_a_failure_names_the_cell_as_the_learner_sees_it(tmp_path):
    """Position in the original notebook (markdown cells count, papermill's added cells do not) and its first line."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    params = new_code_cell('profile = "auto"\nseed = 0\noutput_dir = ""')
    params.metadata["tags"] = ["parameters"]
    cells = [nbformat.v4.new_markdown_cell("# Title"), params, nbformat.v4.new_markdown_cell("Now divide:"),
             new_code_cell("\n# the risky part\nratio = 1 / 0")]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "93_cells.ipynb")
    result = runner.run(["93"], folder=folder, out=tmp_path / "run", echo=lambda line: None)[0]
    assert result.status == "failed"
    assert result.error == 'cell 4 ("# the risky part"): ZeroDivisionError: division by zero'


def test_auto_without_a_gpu_gets_the_tiny_kernel_settings(monkeypatch):
    """`nbhelpers run` defaults to auto; on a laptop that is tiny, which runs offline and with the malloc settings
    that halve 08's time on a 2-core machine."""
    from nbhelpers import env, runner

    for name in runner.CPU_MALLOC:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(env, "gpu_hardware_present", lambda: False)
    for profile in ("auto", "tiny"):
        environment = runner.kernel_environment({"profile": profile})
        assert environment["HF_HUB_OFFLINE"] == "1"
        assert all(environment[k] == v for k, v in runner.CPU_MALLOC.items())
    monkeypatch.setattr(env, "gpu_hardware_present", lambda: True)
    monkeypatch.setattr(env, "gpu", lambda: {"total_gb": 15.0})  # a T4: auto is t4, online, glibc's defaults
    for profile in ("auto", "t4"):
        environment = runner.kernel_environment({"profile": profile})
        assert "HF_HUB_OFFLINE" not in environment and not set(runner.CPU_MALLOC) & set(environment)
