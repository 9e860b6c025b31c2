"""Where things are saved, and saving them so that nothing is ever half-written.

- workspace: outputs and checkpoints. Drive on Colab (once mounted), /kaggle/working on Kaggle, ./outputs locally,
  or an explicit folder.
- model cache: Hub downloads. Local disk on every runtime (Drive is slow for thousands of files); it must be set
  before diffusers/transformers are imported, because they read HF_HOME at import time.
- atomic writes: write a temporary file in the same folder, then rename over the target. A crash at any moment
  leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from nbhelpers import env

DRIVE_MOUNT = Path("/content/drive")
DRIVE_WORKSPACE = DRIVE_MOUNT / "MyDrive" / "nbhelpers"
KAGGLE_WORKSPACE = Path("/kaggle/working")


def mount_drive(enabled: bool = True) -> bool:
    """Mount Google Drive on Colab. Returns True when Drive is available; elsewhere (or disabled) False."""
    if not enabled or env.runtime() != "colab":
        return False
    if (DRIVE_MOUNT / "MyDrive").is_dir():
        return True
    try:
        from google.colab import drive  # type: ignore

        drive.mount(str(DRIVE_MOUNT))
    except Exception as error:  # time-outs and refused consent should not kill the notebook
        print(f"Drive not mounted ({error}); outputs go to local disk and vanish with the runtime.")
        return False
    return True


def default_workspace() -> Path:
    """Drive on Colab once mounted, /kaggle/working/outputs on Kaggle, ./outputs elsewhere (nothing created)."""
    if env.runtime() == "colab" and (DRIVE_MOUNT / "MyDrive").is_dir():
        return DRIVE_WORKSPACE
    if env.runtime() == "kaggle":
        return KAGGLE_WORKSPACE / "outputs"
    return Path("outputs")


def workspace(output_dir: str | os.PathLike = "") -> Path:
    """The folder for outputs and checkpoints; created and checked for write access."""
    root = Path(output_dir).expanduser() if str(output_dir) else default_workspace()
    return ensure_writable(root, "output_dir")


def ensure_writable(folder: Path, parameter: str = "output_dir") -> Path:
    from nbhelpers.checks import ParameterError

    folder = Path(folder).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ParameterError(parameter, str(folder), f"must be a writable folder ({error.strerror or error})") from None
    return folder


def check_writable(folder: str | os.PathLike, parameter: str) -> Path:
    """Refuse, before any work, a folder that could not be created or written: a path through a file, a file where
    the folder should be, a read-only place. Unlike ensure_writable it creates nothing, so a refused command leaves
    no trace; it is a cheap early check, not a guarantee (the disk can still fill up)."""
    from nbhelpers.checks import ParameterError

    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ParameterError(parameter, str(folder), "a folder; it is a file, which is never overwritten")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ParameterError(parameter, str(folder), f"a folder that can be created; {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(parameter, str(folder), f"a writable folder; {existing} is not writable")
    return folder


def default_model_cache() -> Path:
    if env.runtime() == "colab":
        return Path("/content/hf_cache")
    if env.runtime() == "kaggle":
        return Path("/kaggle/tmp/hf_cache")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"


def configure_model_cache(path: str | os.PathLike | None = None) -> Path:
    """Point HF_HOME at the model cache. Call before importing diffusers or transformers."""
    if path is None and os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"])
    cache = Path(path) if path is not None else default_model_cache()
    late = [name for name in ("diffusers", "transformers", "huggingface_hub") if name in sys.modules]
    if late and os.environ.get("HF_HOME") != str(cache) and _cache_read_at_import() != cache.expanduser().resolve():
        # only when it matters: a script that imported transformers first already uses the default cache
        restart = "restart Python" if env.runtime() == "local" else "restart the runtime"
        print(f"Note: {', '.join(late)} already imported; {restart} for the cache at {cache} to apply.")
    os.environ["HF_HOME"] = str(cache)
    return cache


def _cache_read_at_import() -> Path | None:
    """The HF_HOME huggingface_hub read when it was imported (diffusers and transformers import it first)."""
    home = getattr(sys.modules.get("huggingface_hub.constants"), "HF_HOME", None)
    return Path(home).expanduser().resolve() if home else None


def nbhelpers_cache() -> Path:
    """Where nbhelpers keeps what it builds itself (the offline tiny models). Local disk, never Drive."""
    root = os.environ.get("NBHELPERS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nbhelpers"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it is removed.

    Works for anything that writes to a path: PIL's save, safetensors, torch, save_pretrained into a folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a process killed mid-save
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(stale)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        if target.is_dir() and tmp.is_dir():
            # A folder cannot be renamed over a non-empty folder: swap it aside first.
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        _remove(tmp)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj) -> Path:
    return atomic_write_text(target, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_summary(folder: str | os.PathLike, summary: dict) -> Path:
    """Write `<folder>/summary.json` atomically. Paths, numpy and torch scalars become plain JSON."""
    for key in ("notebook", "profile", "seed", "parameters", "timings"):
        if key not in summary:
            raise ValueError(f"summary is missing the required key {key!r}")
    return atomic_write_json(Path(folder) / "summary.json", summary)


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
