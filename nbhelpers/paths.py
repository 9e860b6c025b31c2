"""Where the shipped data lives: inside the wheel (nbhelpers/_data) or beside the package in a checkout."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    for candidate in (_PACKAGE / "_data", _PACKAGE.parent / "data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("nbhelpers data folder not found (expected nbhelpers/_data or ../data)")


def notebooks_dir() -> Path:
    return _PACKAGE.parent / "notebooks"
