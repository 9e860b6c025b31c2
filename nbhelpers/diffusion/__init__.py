"""Stable Diffusion the way Automatic1111 users know it, on diffusers: samplers by name, A1111 prompt weighting,
reproducible seeds, img2img, inpainting, PNG metadata, comparison grids and a widget studio.

    from nbhelpers import diffusion
    engine = diffusion.Engine(run.profile)
    result = engine.txt2img("a lighthouse at dusk, (volumetric light:1.3)", seed=7)

Modules: samplers, prompts, generate, metadata, grids, masks, memory, studio, checks (read them in that order).
"""

from nbhelpers.diffusion.generate import Engine, Generation, default_image_path, denoising_steps, fit
from nbhelpers.diffusion.samplers import available as samplers_available

__all__ = ["Engine", "Generation", "default_image_path", "denoising_steps", "fit", "samplers_available"]
