"""`nbhelpers run`: execute notebooks with papermill, one subprocess each, and write a report.

Each notebook runs in its own `papermill` process so that a per-notebook time limit can really stop it (papermill's
own limit is per cell). The executed notebook is saved cell by cell, so even a failed or stopped run leaves a
notebook to open, and the report quotes the error of the failing cell.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers import checks, persist
from nbhelpers.processes import stop_tree
from nbhelpers.paths import notebooks_dir
from nbhelpers.profiles import PROFILE_NAMES

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DEFAULT_TIMEOUT = 900
# Limits above this mean "no limit": waits longer than threading.TIMEOUT_MAX raise OverflowError, and nobody waits
# a year for a notebook. So --timeout inf and --timeout 1e30 both run without a limit.
NO_LIMIT_ABOVE = 365 * 24 * 3600
RESERVED = {"profile": "--profile", "output_dir": "--out"}  # parameters the runner sets itself


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

    notebook = checks.existing_json("notebook", path, "a Jupyter notebook (JSON)")
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise checks.ParameterError("notebook", str(path), "a Jupyter notebook; this JSON has no list of cells")
    tagged = [c for c in cells if isinstance(c, dict) and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    source = "".join(tagged[0]["source"]) if isinstance(tagged[0]["source"], list) else tagged[0]["source"]
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise checks.ParameterError("notebook", str(path), f"a notebook whose parameters cell is valid Python; line "
                                    f"{error.lineno} of that cell: {error.msg}") from None
    return {target.id: ast.get_source_segment(source, node.value)
            for node in tree.body if isinstance(node, ast.Assign)
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


def parse_parameters(pairs) -> dict:
    """`-p NAME VALUE` pairs to a dict. A name given twice is refused rather than silently taking the last."""
    overrides = {}
    for name, value in pairs:
        name = checks.unicode_text("-p", name)
        if name in overrides:
            raise checks.ParameterError("-p " + name, value, f"one value per parameter; it is also given as "
                                        f"{overrides[name]!r}")
        overrides[name] = parse_value(checks.unicode_text("-p " + name, value))
    return overrides


def plan(notebooks: list[Path], overrides: dict) -> dict[Path, dict]:
    """The parameters each notebook gets. A name no chosen notebook defines is an error, raised before running;
    so are the runner's own (profile, output_dir), which -p would otherwise be silently overridden on."""
    for name, flag in RESERVED.items():
        if name in overrides:
            raise checks.ParameterError("-p " + name, overrides[name], f"set by the runner; use {flag} instead")
    for name, value in overrides.items():
        if isinstance(value, str):
            overrides[name] = checks.unicode_text("-p " + name, value)
    defined = {path: notebook_parameters(path) for path in notebooks}
    for name in overrides:
        if not any(name in params for params in defined.values()):
            allowed = sorted(set().union(*defined.values()) - {"profile", "output_dir"})
            raise checks.ParameterError("-p " + name, overrides[name],
                                        "no chosen notebook defines it; they define " + ", ".join(allowed))
    return {path: {k: v for k, v in overrides.items() if k in defined[path]} for path in notebooks}


def run(names: list[str] | None = None, *, profile: str = "tiny", out: str | os.PathLike = "outputs/run",
        overrides: dict | None = None, timeout: float = DEFAULT_TIMEOUT, folder: Path | None = None,
        echo=print, random_weights: bool = False) -> list[NotebookResult]:
    checks.choice("profile", profile, PROFILE_NAMES)
    if random_weights and profile not in ("t4", "large"):
        raise checks.ParameterError("--random-weights", profile, "a rehearsal of --profile t4 or large (tiny "
                                    "already runs small offline models)")
    checks.number("timeout", timeout, minimum=1)
    notebooks = select(list(names or []), folder)
    out = persist.ensure_writable(Path(out), "--out")
    per_notebook = plan(notebooks, dict(overrides or {}))
    from nbhelpers import report

    results = []
    for path in notebooks:
        parameters = {**per_notebook[path], "profile": profile, "output_dir": str(out)}
        try:
            result = execute(path, out, parameters, timeout, random_weights)
        except KeyboardInterrupt:  # Ctrl-C: the notebook's processes are stopped; report what finished, then stop
            echo(f"{path.stem:<22} stopped (Ctrl-C)")
            report.write(results, out, profile)
            echo(f"interrupted: the report of the {len(results)} finished notebook(s) is {out / 'report.html'}")
            raise
        echo(f"{result.name:<22} {result.status:<8} {result.seconds:7.1f} s" + (f"  {result.error}" if result.error else ""))
        results.append(result)
    report.write(results, out, profile)
    return results


# What YAML accepts unescaped (PyYAML's reader refuses anything else); the rest are BMP characters, \uXXXX-escaped.
_NOT_YAML_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def yaml_json(parameters: dict) -> str:
    """The parameters as JSON that papermill's YAML reader reads back exactly. JSON is YAML, but not with ASCII
    escapes: PyYAML reads an emoji's escaped surrogate pair "\\ud83d\\udc31" as two lone surrogates, which then
    cannot be written into the executed notebook (a 0-byte file and "surrogates not allowed")."""
    return _NOT_YAML_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(parameters, ensure_ascii=False))


# glibc malloc settings for the tiny profile's CPU kernels: keep freed memory and grow the heap in large steps, so
# torch's many short-lived tensors reuse pages instead of faulting new ones in. On this project's 2-core VMs page
# faults were a large part of the cost: 08 under tiny took 186 s with glibc's defaults and 84 s with these and
# float32 CPU training (two 10-step SFT runs alone: 685k -> 299k minor faults, 26.6 -> 20.7 s). The memory kept is
# the kernel's peak, under 2 GB here; other allocators ignore the variables. The rehearsal keeps glibc's defaults:
# its RSS per stage is a measurement.
CPU_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(1 << 36), "MALLOC_TOP_PAD_": str(1 << 30)}


def runs_tiny(profile: str | None) -> bool:
    """Whether the notebook will run under tiny: asked for, or "auto" (the default) on a machine without a GPU."""
    if profile == "auto" or profile is None:
        from nbhelpers import env
        from nbhelpers.profiles import auto_profile_name

        # no NVIDIA device at all: tiny, without importing torch in this process
        return not env.gpu_hardware_present() or auto_profile_name(env.gpu()) == "tiny"
    return profile == "tiny"


def kernel_environment(parameters: dict, random_weights: bool = False) -> dict:
    """The notebook kernel's environment variables."""
    from nbhelpers import rehearsal

    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    if runs_tiny(parameters.get("profile")):
        environment["HF_HUB_OFFLINE"] = "1"  # tiny is offline by definition: fail loudly if anything reaches out
        environment.update(CPU_MALLOC)
    environment.pop(rehearsal.ENV, None)  # only the flag turns a rehearsal on, never a leftover variable
    if random_weights:  # the kernel reads it (nbhelpers.rehearsal): papermill parameters cannot reach the loaders
        environment.update({rehearsal.ENV: "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    return environment


def execute(path: Path, out: Path, parameters: dict, timeout: float, random_weights: bool = False) -> NotebookResult:
    executed = out / "executed" / path.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out / path.stem / "summary.json"
    summary_path.unlink(missing_ok=True)  # a stale summary must not pass for this run's
    environment = kernel_environment(parameters, random_weights)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as handle:
        handle.write(yaml_json(parameters))
    command = [sys.executable, "-m", "papermill", str(path), str(executed), "-f", handle.name,
               "--cwd", str(path.parent), "--no-progress-bar", "--kernel", "python3"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=environment, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=None if timeout > NO_LIMIT_ABOVE else timeout)
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        stop_tree(process.pid)  # papermill and its kernel (which runs in a session of its own)
        log, _ = process.communicate()
        status = "timeout"
    except KeyboardInterrupt:
        stop_tree(process.pid)
        process.communicate()
        raise
    finally:
        os.unlink(handle.name)
    seconds = time.perf_counter() - start
    error = ""
    if status == "timeout":
        error = f"stopped after the per-notebook limit of {timeout:g} s"
    elif status == "failed":
        error = failing_cell_error(executed, path) or _last_line(log)
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError:
            summary = None
    if status == "ok" and summary is None:
        status, error = "failed", f"the notebook wrote no {summary_path.relative_to(out)}"
    return NotebookResult(path.stem, status, seconds, executed, error, summary)


# Cells papermill adds to the executed copy: the learner's notebook does not have them.
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


def failing_cell_error(executed: Path, original: Path | None = None) -> str:
    """`cell N ("first line"): ExceptionName: message` for the first cell that raised, N counted (from 1, markdown
    cells included) in the notebook the learner opens, not in papermill's executed copy, which has extra cells."""
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return ""
    learners = [c for c in cells if not PAPERMILL_TAGS & set(c.get("metadata", {}).get("tags", []))]
    positions = _positions_in(original)
    for index, cell in enumerate(learners):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                value = ANSI.sub("", str(output.get("evalue", ""))).strip()
                position = positions.get(cell.get("id"), index + 1)
                source = "".join(cell["source"]) if isinstance(cell.get("source"), list) else cell.get("source", "")
                first = next((line.strip() for line in source.splitlines() if line.strip()), "")
                where = f"cell {position}" + (f' ("{first[:80]}")' if first else "")
                return f"{where}: {output.get('ename')}: {value}"
    return ""


def _positions_in(original: Path | None) -> dict:
    """Cell id -> position (from 1) in the original notebook; empty when it cannot be read or has no ids."""
    try:
        cells = json.loads(Path(original).read_text())["cells"]
    except (TypeError, OSError, ValueError, KeyError):
        return {}
    return {cell["id"]: number for number, cell in enumerate(cells, 1) if cell.get("id")}


def _last_line(log: str) -> str:
    lines = [ANSI.sub("", line).strip() for line in (log or "").splitlines() if line.strip()]
    return lines[-1] if lines else "papermill failed without output"
