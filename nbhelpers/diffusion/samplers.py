"""Samplers by the names Automatic1111 and ComfyUI users know, mapped onto diffusers schedulers.

A sampler in diffusers is a scheduler: a small object with no weights. Swapping it never touches the UNet, so
changing sampler is instant and the loaded model stays in memory. Every scheduler is built from the pipeline's own
scheduler config, so the noise schedule the model was trained with (betas, timestep spacing) is kept.
"""

from __future__ import annotations

import importlib.util

from nbhelpers import checks

# name -> (diffusers class, extra config). Karras = the Karras et al. (2022) sigma spacing, denser near the end.
_SAMPLERS = {
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),  # SD 1.x was trained without sample clipping
    "DDPM": ("DDPMScheduler", {"clip_sample": False}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),  # its integration weights need scipy
}
# Samplers that draw fresh noise at every step: same seed still means same image, but the result keeps changing
# with the step count instead of converging.
ANCESTRAL = {"Euler a", "DDPM", "DPM++ 2M SDE Karras"}
# Samplers that call the UNet twice per step (so they cost about double).
TWO_EVALUATIONS = {"Heun"}
# The A1111 "Sampler" + "Schedule type" pair that newer A1111 versions write separately.
SCHEDULE_SUFFIXES = {"Karras": " Karras"}


def available() -> list[str]:
    """Names usable here (LMS only when scipy is installed)."""
    names = list(_SAMPLERS)
    if importlib.util.find_spec("scipy") is None:
        names.remove("LMS")
    return names


def check(name) -> str:
    return checks.choice("sampler", name, available())


def make(name: str, config):
    """A fresh scheduler for sampler `name` with the noise schedule of `config` (a pipeline's scheduler.config)."""
    check(name)
    import diffusers

    class_name, extra = _SAMPLERS[name]
    scheduler = getattr(diffusers, class_name).from_config(config, **extra)
    scheduler.nbhelpers_sampler = name  # lets `use` skip rebuilding the same sampler
    scheduler.nbhelpers_base_config = config
    return scheduler


def use(pipe, name: str):
    """Put sampler `name` on `pipe` (weights untouched). Returns the pipe."""
    if getattr(pipe.scheduler, "nbhelpers_sampler", None) != name:
        # Always start from the config the model shipped with: options of the previous sampler (Karras sigmas,
        # SDE) would otherwise leak into the next one, e.g. "Euler" silently becoming Euler Karras.
        base = getattr(pipe.scheduler, "nbhelpers_base_config", None) or pipe.scheduler.config
        pipe.scheduler = make(name, base)
    return pipe


def current(pipe) -> str:
    """The A1111 name of the pipe's scheduler, or its class name when nbhelpers did not set it."""
    return getattr(pipe.scheduler, "nbhelpers_sampler", None) or type(pipe.scheduler).__name__
