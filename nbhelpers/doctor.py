"""The doctor: the machine's facts (from `nbhelpers.env`'s probes), the known problems they reveal, and the fix
for each.

`report()` gathers everything into a `Report` that shows as a table in a notebook and as text or JSON on the
command line (`nbhelpers doctor [--json]`). It lives apart from the probes because it also reads the workspace
(`persist`) and the auto profile (`profiles`), which themselves need the probes: kept in one module, the three
imported each other.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers import env, persist
from nbhelpers.profiles import auto_profile_name

# Versions the curriculum is tested with: the lowest are Colab's preinstalled ones (see README).
TESTED_RANGES = {
    "torch": ("2.4", "2.15"),
    "diffusers": ("0.37", "0.50"),
    "transformers": ("5.10", "6"),
    "peft": ("0.18", "1"),
    "accelerate": ("1.0", "2"),
    "ipywidgets": ("7.6", "9"),
}
LOW_DISK_GB = 10
LOW_RAM_GB = 8
LOW_VRAM_GB = 2


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass
class Report:
    facts: dict
    problems: list = field(default_factory=list)  # (severity, message, fix)

    def rows(self) -> list[tuple[str, str]]:
        facts = self.facts
        gpu_info = facts["gpu"]
        rows = [
            ("runtime", facts["runtime"]),
            ("python", facts["python"]),
            ("GPU", f"{gpu_info['name']} x{gpu_info['count']} (compute {gpu_info['capability']})" if gpu_info else "none"),
            ("VRAM free / total", f"{gpu_info['free_gb']} / {gpu_info['total_gb']} GiB" if gpu_info else "-"),
            ("dtype to use", facts["dtype"]),
            ("RAM available / total", f"{facts['ram']['available_gb']} / {facts['ram']['total_gb']} GiB"),
            ("disk free / total", f"{facts['disk']['free_gb']} / {facts['disk']['total_gb']} GiB"),
            ("Hugging Face token", "found (not shown)" if facts["hf_token"] else "not set"),
            ("workspace", f"{facts['workspace']['path']} ({'writable' if facts['workspace']['writable'] else 'NOT writable'})"),
            ("Drive", {True: "mounted", False: "not mounted", None: "-"}[facts["drive_mounted"]]),
            ("profile (auto)", facts["auto_profile"]),
        ]
        rows += [(name, version or "not installed") for name, version in facts["versions"].items()]
        rows += [(name, version) for name, version in facts.get("frontends", {}).items() if version]
        return rows

    def text(self) -> str:
        rows = self.rows()
        width = max(len(key) for key, _ in rows)
        lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
        lines.append("")
        if self.problems:
            for severity, message, fix in self.problems:
                lines.append(f"[{severity}] {message}\n    fix: {fix}")
        else:
            lines.append("No known problems found.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {**self.facts, "problems": [dict(zip(("severity", "message", "fix"), p)) for p in self.problems]}

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _repr_html_(self) -> str:
        from html import escape

        body = "".join(f"<tr><td><b>{escape(k)}</b></td><td>{escape(str(v))}</td></tr>" for k, v in self.rows())
        problems = "".join(
            f"<li><b>{escape(s)}</b>: {escape(m)}<br><i>fix:</i> {escape(f)}</li>" for s, m, f in self.problems
        ) or "<li>No known problems found.</li>"
        return f"<table>{body}</table><p><b>Problems</b></p><ul>{problems}</ul>"

    def __str__(self) -> str:
        return self.text()


# The Jupyter front ends and widget managers installed beside the kernel, and the ipywidgets line each speaks.
FRONTENDS = ("jupyterlab", "notebook", "jupyterlab_widgets", "widgetsnbextension")


def frontends() -> dict:
    """Versions of the front-end packages installed in this environment (None: not installed)."""
    from nbhelpers import env

    return env.versions(FRONTENDS)


def widget_mismatches(widgets: str | None, installed: dict) -> list[str]:
    """Why a front end installed here would not show this kernel's widgets. A widget manager renders one ipywidgets
    line: jupyterlab_widgets 1.x and widgetsnbextension 3.x render 7, 3.x and 4.x render 8; JupyterLab 4 and
    Notebook 7 take only jupyterlab_widgets 3 (ipywidgets 8). Colab brings its own front end: not checked here."""
    if not widgets:
        return []
    line = _version_tuple(widgets)[:1]
    found = []
    for package, manager_for in (("jupyterlab_widgets", {1: 7, 3: 8}), ("widgetsnbextension", {3: 7, 4: 8})):
        version = installed.get(package)
        major = _version_tuple(version)[:1] if version else ()
        speaks = manager_for.get(major[0]) if major else None
        if speaks and line and speaks != line[0]:
            found.append(f"{package} {version} renders ipywidgets {speaks} widgets, the kernel has ipywidgets {widgets}")
    for package, first_new in (("jupyterlab", 4), ("notebook", 7)):
        version = installed.get(package)
        if version and _version_tuple(version)[:1] >= (first_new,) and line == (7,):
            found.append(f"{package} {version} renders only ipywidgets 8 widgets, the kernel has ipywidgets {widgets}")
    return found


def find_problems(facts: dict) -> list[tuple[str, str, str]]:
    problems = []
    if facts["gpu"] is None and facts["gpu_hardware"]:
        problems.append(("error", "A GPU is present but torch cannot use it (CPU-only torch or a driver mismatch).",
                         "On Colab never reinstall torch: Runtime > Disconnect and delete runtime, then install "
                         "only this package. Elsewhere install a CUDA build of torch."))
    if facts["gpu"] is None and facts["runtime"] in ("colab", "kaggle"):
        problems.append(("warning", "No GPU on this runtime: notebooks fall back to the `tiny` profile.",
                         "Colab: Runtime > Change runtime type > T4 GPU. Kaggle: Settings > Accelerator > GPU T4."))
    widgets = facts["versions"].get("ipywidgets")
    if facts["runtime"] == "colab" and widgets and _version_tuple(widgets) >= (8,):
        problems.append(("warning", f"ipywidgets {widgets} on Colab: version 8 widgets do not render there.",
                         "pip install 'ipywidgets==7.7.1' and restart the runtime."))
    mismatches = [] if facts["runtime"] == "colab" else widget_mismatches(widgets, facts.get("frontends", {}))
    if mismatches:
        problems.append(("warning", "Widgets (the Studio, the chat panel, sliders) will not show in this front end: "
                         + "; ".join(mismatches) + ".",
                         "In JupyterLab 4 or Notebook 7: pip install 'ipywidgets>=8,<9', then restart the kernel and "
                         "reload the page. For ipywidgets 7 use the classic notebook (notebook<7) with "
                         "widgetsnbextension 3.x, as Colab does."))
    free_disk = facts["disk"]["free_gb"]
    if free_disk is not None and free_disk < LOW_DISK_GB:
        problems.append(("warning", f"Only {free_disk} GiB of disk free: one SD checkpoint needs 2-7 GB.",
                         "Delete old outputs or the model cache (huggingface-cli delete-cache)."))
    total_ram = facts["ram"]["total_gb"]
    if total_ram is not None and total_ram < LOW_RAM_GB:
        problems.append(("warning", f"Only {total_ram} GiB of RAM: loading large checkpoints may crash the kernel.",
                         "Use the fp16/safetensors variants and load straight to the GPU."))
    if facts.get("workspace") and not facts["workspace"]["writable"]:
        problems.append(("error", f"The workspace {facts['workspace']['path']} is not writable: outputs cannot be saved.",
                         "Pass output_dir= (or --out) pointing at a folder you can write, or fix its permissions."))
    if facts["runtime"] == "colab" and facts.get("drive_mounted") is False:
        problems.append(("warning", "Google Drive is not mounted: outputs and checkpoints vanish with the runtime.",
                         "Run 00_setup with mount_drive=True, or google.colab.drive.mount('/content/drive')."))
    gpu_info = facts["gpu"]
    if gpu_info and gpu_info["free_gb"] < LOW_VRAM_GB:
        problems.append(("warning", f"Only {gpu_info['free_gb']} GiB of VRAM free: another notebook or a crashed run "
                                    "still holds GPU memory.",
                         "Free it (del pipe; gc.collect(); torch.cuda.empty_cache()) or restart the runtime."))
    if not facts["hf_token"] and facts.get("auto_profile") not in (None, "tiny"):
        from nbhelpers.access import gated_models, page

        problems.append(("warning", "No Hugging Face token: the Hub will refuse the gated models "
                                    + ", ".join(gated_models()) + " (01b, 06, 09).",
                         "Accept each licence while logged in (" + ", ".join(page(m) for m in gated_models())
                         + "), create a read token, and on Colab add it as the secret HF_TOKEN (key icon in the "
                           "left bar); elsewhere export HF_TOKEN. Then: nbhelpers doctor --check-access"))
    for model, message in facts.get("hub_refused", []):
        problems.append(("error", message.splitlines()[0], " ".join(line.strip() for line in message.splitlines()[1:])))
    for name, (low, high) in TESTED_RANGES.items():
        version = facts["versions"].get(name)
        if version and not (_version_tuple(low) <= _version_tuple(version) < _version_tuple(high)):
            problems.append(("warning", f"{name} {version} is outside the tested range [{low}, {high}).",
                             f"pip install '{name}>={low},<{high}' (on Colab, restart the runtime afterwards)."))
    return problems


def workspace_status(path: str | os.PathLike | None = None) -> dict:
    """The workspace folder and whether it can be written, without creating anything."""
    path = persist.default_workspace() if path is None else path
    existing = Path(path).resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return {"path": str(Path(path).resolve()), "writable": os.access(existing, os.W_OK)}


def collect(path: str | os.PathLike | None = None) -> dict:
    """Every fact the report shows, from the probes."""
    gpu_info = env.gpu()
    return {
        "runtime": env.runtime(),
        "python": sys.version.split()[0],
        "gpu": gpu_info,
        "gpu_hardware": env.gpu_hardware_present(),
        "dtype": env.best_dtype(gpu_info),
        "ram": env.ram(),
        "disk": env.disk(path or "."),
        "hf_token": env.hf_token_available(),
        "workspace": workspace_status(path),
        "drive_mounted": (persist.DRIVE_MOUNT / "MyDrive").is_dir() if env.runtime() == "colab" else None,
        "versions": env.versions(),
        "frontends": frontends(),
        "auto_profile": auto_profile_name(gpu_info),
    }


def report(path: str | os.PathLike | None = None, check_access: bool = False) -> Report:
    """The doctor's report for this machine, with `path` (default: the workspace) as the folder outputs go to.
    `check_access` also asks the Hub whether this token may download each gated default model (network)."""
    facts = collect(path)
    if check_access:
        from nbhelpers.access import check_access as refused

        facts["hub_refused"] = refused()
    return Report(facts, find_problems(facts))
