"""Small display helpers: a Markdown table and a figure saved atomically as PNG, then shown inline."""

from __future__ import annotations

from pathlib import Path

from nbhelpers import persist


def markdown_table(rows: list[dict], columns: list[str] | None = None):
    """A Markdown table (IPython.display.Markdown when available, else the text) of a list of dicts."""
    columns = columns or (list(rows[0]) if rows else [])

    def cell(value) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    try:
        from IPython.display import Markdown

        return Markdown(text)
    except ImportError:
        return text


def save_figure(fig, path) -> Path:
    """Save `fig` as PNG atomically, show it inline in a notebook, and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    from nbhelpers import rehearsal

    rehearsal.label_figure(fig)  # a rehearsal's plot says it shows noise
    with persist.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fig)
    except ImportError:
        pass
    plt.close(fig)
    return path
