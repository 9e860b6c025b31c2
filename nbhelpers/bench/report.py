"""Benchmark results as CSV, a markdown table and plots (written atomically)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from nbhelpers import persist

COLUMNS = ("model", "weights", "device", "threads", "dtype", "sampler", "steps", "resolution", "batch", "attention", "compile",
           "channels_last", "it_per_s", "s_per_image", "peak_mib", "peak_kind", "repeats")


def _plain(rows) -> list[dict]:
    return [{key: row.get(key, "") for key in COLUMNS} for row in rows]


def csv_text(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(_plain(rows))
    return out.getvalue()


def markdown(rows, columns=("model", "dtype", "sampler", "steps", "resolution", "batch", "attention",
                            "it_per_s", "s_per_image", "peak_mib")) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot(rows, path, title: str = "benchmark"):
    """Two panels: it/s and seconds per image, one bar per grid point (labelled by what varies)."""
    import matplotlib

    matplotlib.use("Agg") if not _in_notebook() else None
    import matplotlib.pyplot as plt

    varying = [c for c in ("model", "dtype", "sampler", "steps", "resolution", "batch", "attention", "compile",
                           "channels_last") if len({str(r[c]) for r in rows}) > 1] or ["model"]
    labels = [" ".join(str(r[c]) for c in varying) for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(min(4 + 0.7 * len(rows), 14), 3.6))
    for axis, key, name in ((axes[0], "it_per_s", "denoising steps per second"),
                            (axes[1], "s_per_image", "seconds per image")):
        axis.bar(range(len(rows)), [r[key] for r in rows], color="tab:blue")
        axis.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
        axis.set_title(name)
    figure.suptitle(f"{title} ({', '.join(varying)})")
    figure.tight_layout()
    from nbhelpers import rehearsal

    rehearsal.label_figure(figure)  # a rehearsal's plot says it shows noise
    with persist.atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return figure


def _in_notebook() -> bool:
    import sys

    return "ipykernel" in sys.modules


def write(rows, folder, title: str = "benchmark") -> dict:
    """results.csv, results.md and results.png in `folder`; returns their paths."""
    folder = Path(folder)
    paths = {"csv": folder / "results.csv", "markdown": folder / "results.md", "plot": folder / "results.png"}
    persist.atomic_write_text(paths["csv"], csv_text(rows))
    persist.atomic_write_text(paths["markdown"], f"# {title}\n\n" + markdown(rows))
    import matplotlib.pyplot as plt

    figure = plot(rows, paths["plot"], title)
    if not _in_notebook():
        plt.close(figure)
    return paths
