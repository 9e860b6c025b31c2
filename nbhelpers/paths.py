"""Where the shipped data lives: inside the wheel (nbhelpers/_data) or beside the package in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    for candidate in (_PACKAGE / "_data", _PACKAGE.parent / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("nbhelpers data folder not found (expected nbhelpers/_data or ../data)")


def notebooks_dir() -> Path:
    return _PACKAGE.parent / "notebooks"


def source_checkout() -> Path | None:
    """The repository folder when nbhelpers runs from a source checkout, else None (an installed wheel)."""
    root = _PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "nbhelpers").is_dir() else None
