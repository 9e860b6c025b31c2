"""Training efficiency: seconds per step, peak memory and LoRA file size of short runs of the one trainer
(`nbhelpers.train`), with the profile's settings, next to what the planner predicts.

Each row is a (base, method) pair: base None is the profile's own training model (`train_base`: SD 1.5 on t4 and
large, the lab SD under tiny); another base (e.g. "train_sdxl", "tiny:sdxl") is passed to `TrainConfig(base=...)`.
Rows per profile are in `ROWS`.

What is measured:
- s/step: the median of the trainer's own per-step times (`losses[i]["seconds"]`), the first step left out (it pays
  for lazy initialisation);
- peak memory: on a GPU `torch.cuda.max_memory_allocated` over the run (VRAM held by tensors); on the CPU the rise of
  the process's peak resident set (VmHWM) over the run: RAM, not VRAM, and with float32 weights;
- LoRA size: the diffusers-format file the run writes.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

METHODS = ("lora", "dreambooth")
# (base, method) rows per profile; None = the profile's train_base (SD 1.5, the lab SD under tiny), "train_sdxl" its
# SDXL training model (a random miniature SDXL under tiny: its speed and memory, not its pictures, mean something)
ROWS = {name: tuple((base, method) for base in (None, "train_sdxl") for method in ("lora", "dreambooth"))
        for name in ("tiny", "t4", "large")}
STEPS = {"tiny": 6, "t4": 20, "large": 20}
DREAMBOOTH_PROMPTS = {"instance_prompt": "a sks shape on a white background",
                      "class_prompt": "a shape on a white background"}


def default_steps(profile: str) -> int:
    """Steps of a row: STEPS, or in a rehearsal the rehearsal's training steps (a step count is all it checks)."""
    from nbhelpers import rehearsal

    return rehearsal.override("train", "steps", STEPS.get(profile, 20))


def config_for(profile: str, base: str | None, method: str, steps: int, output):
    """The TrainConfig of one row: the profile's settings, the shipped data, `steps` steps, no checkpoints."""
    from nbhelpers import checks
    from nbhelpers.train import TrainConfig, shipped_data

    checks.choice("method", method, METHODS)
    extra = {"base": base} if base is not None else {}
    if method == "dreambooth":
        extra.update(DREAMBOOTH_PROMPTS)
    return TrainConfig(mode=method, data=str(shipped_data(method)), output=str(output), profile=profile, steps=steps,
                       checkpoint_every=10**6, validation_every=0, progress=False, **extra).resolved()


def _peak_tracker():
    """(reset, read, kind) for the peak memory of what runs between them, in bytes."""
    import torch

    if torch.cuda.is_available():
        def reset():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return 0  # VRAM allocated by tensors, from zero: the model is loaded inside the run

        return reset, torch.cuda.max_memory_allocated, "peak VRAM allocated"
    from nbhelpers.plan import measure

    return measure.reset_peak, measure.peak, "peak RSS rise (CPU RAM, not VRAM)"


def measure_row(profile: str, base: str | None, method: str, steps: int | None = None, folder=None) -> dict:
    """Train one row for a few steps in `folder` (a temporary one by default) and return its figures."""
    import accelerate  # noqa: F401  imported before the measurement starts: their
    import peft  # noqa: F401        modules would count as training memory
    from diffusers import optimization  # noqa: F401

    from nbhelpers.train import train

    steps = steps or default_steps(profile)
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(folder or scratch) / f"{base or 'base'}-{method}".replace(":", "_")
        config = config_for(profile, base, method, steps, output)
        reset, read, kind = _peak_tracker()
        before = reset()
        result = train(config)
        peak = read() - before
        lora = result.lora.stat().st_size if result.lora else None
    timed = [record["seconds"] for record in result.losses[1:]] or [result.losses[0]["seconds"]]
    return {"base": base or "profile train_base", "method": "DreamBooth-LoRA" if method == "dreambooth" else "LoRA",
            "resolution": config.resolution, "batch": config.batch_size, "rank": config.rank,
            "mixed_precision": config.mixed_precision, "gradient_checkpointing": config.gradient_checkpointing,
            "8bit_adam": config.use_8bit_adam, "prior_preservation": config.prior_preservation,
            "steps": len(result.losses), "s_per_step": round(statistics.median(timed), 4),
            "peak_mib": round(peak / 2**20, 1), "peak_kind": kind,
            "lora_mib": round(lora / 2**20, 3) if lora else None}


SD_BASES = (None, "train_base", "lab:sd", "tiny:sd", "sd15")  # names of an SD 1.x base, and of an SDXL one
SDXL_BASES = ("train_sdxl", "tiny:sdxl", "sdxl")


def planner_model(profile: str, base: str | None) -> str | None:
    """The planner's name for a row's base model (the lab SD has the tiny-sd architecture), or None."""
    family = "sd" if base in SD_BASES else "sdxl" if base in SDXL_BASES else None
    if family is None:
        return None
    return ("tiny-" + family) if profile == "tiny" else {"sd": "sd15", "sdxl": "sdxl"}[family]


def prediction(profile: str, base: str | None, method: str, device: str) -> dict:
    """The planner's predicted peak for the row's settings (`nbhelpers.plan.training`), or the reason there
    is none. On the CPU the CUDA context is left out of the prediction."""
    from nbhelpers.plan import training as planner

    model = planner_model(profile, base)
    if model is None:
        return {"predicted_mib": None, "prediction": f"the planner does not know base {base!r}"}
    config = config_for(profile, base, method, STEPS.get(profile, 20), Path(tempfile.gettempdir()) / "unused")
    dtype = {"fp16": "float16", "bf16": "bfloat16", "no": "float32"}[config.mixed_precision]
    settings = planner.TrainSettings(resolution=config.resolution, batch_size=config.batch_size, rank=config.rank,
                                     gradient_checkpointing=config.gradient_checkpointing,
                                     use_8bit_adam=config.use_8bit_adam, cache_latents=config.cache_latents,
                                     train_text_encoder=config.train_text_encoder, dtype=dtype)
    mode = "dreambooth" if config.prior_preservation else "lora"  # the planner's dreambooth has prior preservation
    peak = planner.training_peak(model, mode, settings)
    predicted = peak["peak"] - (peak["parts"]["cuda_context"] if device == "cpu" else 0)
    return {"predicted_mib": round(predicted / 2**20, 1), "prediction": f"nbhelpers.plan.training ({model})"}


def rows(profile: str, steps: int | None = None, entries=None) -> list[dict]:
    """Every efficiency row of `profile` (or the given (base, method) entries), measured, next to the planner's
    prediction of the same settings."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = []
    for base, method in entries or ROWS[profile]:
        row = {**measure_row(profile, base, method, steps), **prediction(profile, base, method, device)}
        if row["predicted_mib"]:
            row["measured_vs_predicted"] = round(row["peak_mib"] / row["predicted_mib"], 2)
        table.append(row)
    return table
