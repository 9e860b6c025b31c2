"""One trainer for LoRA fine-tuning and DreamBooth on Stable Diffusion 1.x: notebooks, CLI and multi-GPU.

    from nbhelpers.train import TrainConfig, train
    result = train(TrainConfig(mode="lora", data="data/train/lora", output="outputs/lora", profile="tiny"))
    pipe.load_lora_weights(result.output, weight_name="pytorch_lora_weights.safetensors")

Modules: config (settings and their checks), data (image folders), priors (class images and the prior loss),
loop (the accelerate trainer, `launch` for several GPUs from a notebook), checkpoints (save, keep, resume),
export (diffusers, kohya, model card), cli, views (what the notebooks draw and plot).
From a shell: `nbhelpers train lora --data DIR --output DIR`, or `accelerate launch -m nbhelpers.train ...`.
"""

from nbhelpers.train.config import TrainConfig
from nbhelpers.train.loop import TrainResult, launch, train

__all__ = ["TrainConfig", "TrainResult", "launch", "train", "shipped_data"]


def shipped_data(kind: str):
    """The small datasets shipped with the curriculum: "lora" (captioned shapes) or "dreambooth" (one subject)."""
    from nbhelpers import checks
    from nbhelpers.paths import data_dir

    checks.choice("kind", kind, ("lora", "dreambooth"))
    return data_dir() / "train" / kind
