"""What machine is this? Runtime, GPU, memory, disk, library versions and the Hugging Face token, probed.

Only probes live here, and they import nothing from nbhelpers: persist, profiles and the doctor
(`nbhelpers.doctor`, which turns these facts into a report with known problems and their fixes) all build on
this module. Every probe is defensive: the doctor must answer on a broken machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

GIB = 1024**3
LIBRARIES = ["torch", "diffusers", "transformers", "peft", "accelerate", "huggingface_hub", "safetensors",
             "bitsandbytes", "compel", "ipywidgets", "papermill", "matplotlib", "numpy", "pillow"]


def runtime() -> str:
    """'colab', 'kaggle' or 'local'."""
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG") or os.environ.get("COLAB_GPU"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") or os.environ.get("KAGGLE_URL_BASE"):
        return "kaggle"
    return "local"


def gpu() -> dict | None:
    """Name, total and free VRAM (GiB), compute capability and bf16 support of GPU 0; None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "total_gb": round(total / GIB, 2),
        "free_gb": round(free / GIB, 2),
        "capability": f"{props.major}.{props.minor}",
        "bf16": props.major >= 8,
    }


def gpu_hardware_present() -> bool:
    """True when the machine has an NVIDIA GPU, whether or not torch can use it."""
    return Path("/dev/nvidia0").exists() or bool(shutil.which("nvidia-smi")) or os.environ.get("COLAB_GPU") == "1"


def best_dtype(gpu_info: dict | None = None) -> str:
    """fp16 on a T4 (no bf16 there), bf16 on Ampere and newer, fp32 on CPU."""
    gpu_info = gpu() if gpu_info is None else gpu_info
    if not gpu_info:
        return "float32"
    return "bfloat16" if gpu_info.get("bf16") else "float16"


def ram() -> dict:
    """Total and available system RAM in GiB (Linux /proc/meminfo; psutil elsewhere)."""
    try:
        values = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) * 1024
        return {"total_gb": round(values["MemTotal"] / GIB, 2), "available_gb": round(values["MemAvailable"] / GIB, 2)}
    except (OSError, KeyError, ValueError):
        try:
            import psutil

            memory = psutil.virtual_memory()
            return {"total_gb": round(memory.total / GIB, 2), "available_gb": round(memory.available / GIB, 2)}
        except Exception:
            return {"total_gb": None, "available_gb": None}


def disk(path: str | os.PathLike = ".") -> dict:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return {"total_gb": None, "free_gb": None}
    return {"total_gb": round(usage.total / GIB, 2), "free_gb": round(usage.free / GIB, 2)}


def versions(names=LIBRARIES) -> dict:
    """Installed version of each package in `names` (None: not installed)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def hf_token() -> str | None:
    """The Hugging Face token from the environment or Colab's secrets. Callers must never print or save it."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token or runtime() != "colab":
        return token or None
    try:
        from google.colab import userdata  # type: ignore

        return userdata.get("HF_TOKEN")
    except Exception:
        return None


def hf_token_available() -> bool:
    """Whether a Hugging Face token can be found (also a `huggingface-cli login` file). Never returns the token."""
    if hf_token():
        return True
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return (home / "token").is_file()
