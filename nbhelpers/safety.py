"""Weights from safetensors only.

`.ckpt`, `.bin`, `.pt` and `.pth` files are Python pickles: loading one runs whatever code its author put in it.
Every path where a user hands nbhelpers a weights file (a LoRA, an embedding, a checkpoint) goes through
`check_weights`, which refuses pickles unless the caller opts in with `allow_pickle=True`, and even then they
are read with `torch.load(weights_only=True)`, which refuses arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers.checks import ParameterError

PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl", ".pickle"}
WHY = ("is a Python pickle, which can run arbitrary code when loaded: use a .safetensors file (convert it where you "
       "trust it), or pass allow_pickle=True only for a file whose source you trust")


def check_weights(path, *, allow_pickle: bool = False, parameter: str = "weights") -> Path:
    """The path, if it is safe to load: a .safetensors file, or a folder whose weights are all safetensors."""
    path = Path(path)
    if not path.exists():
        raise ParameterError(parameter, str(path), "must be an existing .safetensors file or folder")
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles and not allow_pickle:
        raise ParameterError(parameter, str(pickles[0]), WHY)
    if path.is_file() and path.suffix.lower() not in PICKLE_SUFFIXES | {".safetensors"}:
        raise ParameterError(parameter, str(path), "must be a .safetensors weights file")
    return path


def load_state_dict(path, *, allow_pickle: bool = False, device: str = "cpu") -> dict:
    path = check_weights(path, allow_pickle=allow_pickle)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=device)
    import torch

    return torch.load(path, map_location=device, weights_only=True)
