"""The GPUs the planner knows: memory the GPU shows to PyTorch, and the system RAM of the usual runtime.

All sizes are GiB (2**30 bytes), because that is what `nvidia-smi` and `torch.cuda.mem_get_info` show: a "16 GB"
T4 shows 15,360 MiB = 15.0 GiB. RAM is the runtime's, not the card's: on a free Colab T4 it is ~12.7 GiB, and it is
often the real limit, because diffusers loads a whole pipeline into RAM before moving it to the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers import checks


@dataclass(frozen=True)
class GPU:
    name: str
    vram_gib: float  # visible to PyTorch
    ram_gib: float  # system RAM of the runtime that usually comes with it
    bf16: bool  # Turing (T4) has no bfloat16: fp16 is the 16-bit dtype there
    note: str = ""


GPUS = {
    "t4": GPU("NVIDIA T4 (free Colab/Kaggle)", 15.0, 12.7, False, "15,360 MiB; Colab gives ~12.7 GiB RAM"),
    "l4": GPU("NVIDIA L4", 22.5, 53.0, True, "24 GB card, 23,034 MiB visible; Colab L4 runtime RAM"),
    "a100-40": GPU("NVIDIA A100 40GB", 40.0, 83.5, True, "Colab A100 runtime RAM"),
    "a100-80": GPU("NVIDIA A100 80GB", 80.0, 83.5, True, "RAM assumed as on Colab; cloud VMs often have more"),
}
ALIASES = {"a100": "a100-40"}


def get_gpu(name) -> GPU:
    """The GPU called `name` (case-insensitive); unknown names fail with the list of known ones."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in GPUS:
        raise checks.ParameterError("gpu", name, "choose one of " + ", ".join(list(GPUS) + list(ALIASES)))
    return GPUS[key]


def gpu_key(name) -> str:
    get_gpu(name)
    return ALIASES.get(str(name).lower(), str(name).lower())
