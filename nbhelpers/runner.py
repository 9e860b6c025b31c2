"""`nbhelpers run`: execute notebooks with papermill, one subprocess each, and write a report.

Each notebook runs in its own `papermill` process so that a per-notebook time limit can really stop it (papermill's
own limit is per cell). The executed notebook is saved cell by cell, so even a failed or stopped run leaves a
notebook to open, and the report quotes the error of the failing cell.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers import checks, persist
from nbhelpers.paths import notebooks_dir
from nbhelpers.profiles import PROFILE_NAMES

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DEFAULT_TIMEOUT = 900


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok", "failed" or "timeout"
    seconds: float
    executed: Path
    error: str = ""
    summary: dict | None = field(default=None)


def available(folder: Path | None = None) -> dict[str, Path]:
    folder = folder or notebooks_dir()
    return {path.stem: path for path in sorted(Path(folder).glob("[0-9][0-9]*_*.ipynb"))}


def select(names: list[str], folder: Path | None = None) -> list[Path]:
    """Notebook paths for names given as `02_txt2img`, `02_txt2img.ipynb` or `02`; all when `names` is empty."""
    known = available(folder)
    if not known:
        raise checks.ParameterError("notebooks folder", str(folder or notebooks_dir()), "must hold NN_name.ipynb files")
    if not names:
        return list(known.values())
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [path for key, path in known.items() if key == stem or key.split("_", 1)[0] == stem]
        if len(matches) != 1:
            raise checks.ParameterError("notebook", name, "choose one of " + ", ".join(known))
        chosen.append(matches[0])
    return chosen


def notebook_parameters(path: Path) -> dict:
    """The names and default values (as source text) of a notebook's `parameters` cell.

    Read with Python's own parser: papermill's line-based one skips assignments whose comment holds an "=".
    """
    import ast

    cells = json.loads(Path(path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    source = "".join(tagged[0]["source"]) if isinstance(tagged[0]["source"], list) else tagged[0]["source"]
    return {target.id: ast.get_source_segment(source, node.value)
            for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def parse_value(text: str):
    """Command-line text to a Python value: JSON (numbers, true/false/null, lists), Python literals, else a string."""
    for parse in (json.loads, _python_literal):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text


def _python_literal(text: str):
    import ast

    return ast.literal_eval(text)


def plan(notebooks: list[Path], overrides: dict) -> dict[Path, dict]:
    """The parameters each notebook gets. A name no chosen notebook defines is an error, raised before running."""
    defined = {path: notebook_parameters(path) for path in notebooks}
    for name in overrides:
        if not any(name in params for params in defined.values()):
            allowed = sorted(set().union(*defined.values()) - {"profile", "output_dir"})
            raise checks.ParameterError("-p " + name, overrides[name],
                                        "no chosen notebook defines it; they define " + ", ".join(allowed))
    return {path: {k: v for k, v in overrides.items() if k in defined[path]} for path in notebooks}


def run(names: list[str] | None = None, *, profile: str = "tiny", out: str | os.PathLike = "outputs/run",
        overrides: dict | None = None, timeout: float = DEFAULT_TIMEOUT, folder: Path | None = None,
        echo=print) -> list[NotebookResult]:
    checks.choice("profile", profile, PROFILE_NAMES)
    checks.number("timeout", timeout, minimum=1)
    notebooks = select(list(names or []), folder)
    out = persist.ensure_writable(Path(out), "--out")
    per_notebook = plan(notebooks, dict(overrides or {}))
    results = []
    for path in notebooks:
        parameters = {**per_notebook[path], "profile": profile, "output_dir": str(out)}
        result = execute(path, out, parameters, timeout)
        echo(f"{result.name:<22} {result.status:<8} {result.seconds:7.1f} s" + (f"  {result.error}" if result.error else ""))
        results.append(result)
    from nbhelpers import report

    report.write(results, out, profile)
    return results


def execute(path: Path, out: Path, parameters: dict, timeout: float) -> NotebookResult:
    executed = out / "executed" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out / path.stem / "summary.json"
    summary_path.unlink(missing_ok=True)  # a stale summary must not pass for this run's
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    if parameters.get("profile") == "tiny":
        environment["HF_HUB_OFFLINE"] = "1"  # tiny is offline by definition: fail loudly if anything reaches out
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(parameters, handle)  # JSON is YAML, which papermill's -f reads
    command = [sys.executable, "-m", "papermill", str(path), str(executed), "-f", handle.name,
               "--cwd", str(path.parent), "--no-progress-bar", "--kernel", "python3"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the kernel is in the same session: stop it too
        log, _ = process.communicate()
        status = "timeout"
    finally:
        os.unlink(handle.name)
    seconds = time.perf_counter() - start
    error = ""
    if status == "timeout":
        error = f"stopped after the per-notebook limit of {timeout:g} s"
    elif status == "failed":
        error = failing_cell_error(executed) or _last_line(log)
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError:
            summary = None
    if status == "ok" and summary is None:
        status, error = "failed", f"the notebook wrote no {summary_path.relative_to(out)}"
    return NotebookResult(path.stem, status, seconds, executed, error, summary)


def failing_cell_error(executed: Path) -> str:
    """`ExceptionName: message` of the first cell that raised, from the executed notebook."""
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = ANSI.sub("", str(output.get("evalue", ""))).strip()
                return f"cell {index}: {output.get('ename')}: {value}"
    return ""


def _last_line(log: str) -> str:
    lines = [ANSI.sub("", line).strip() for line in (log or "").splitlines() if line.strip()]
    return lines[-1] if lines else "papermill failed without output"
