"""Checks for generation settings. Each bad value raises ParameterError naming the parameter and what is allowed,
before any model is loaded or called, so a typo costs a second instead of a model load."""

from __future__ import annotations

from pathlib import Path

from nbhelpers.checks import ParameterError, integer, number, text
from nbhelpers.diffusion import samplers

MIN_SIDE = 64
MAX_IMAGES = 16
MAX_STEPS = 500
MAX_CFG = 50.0
RANDOM_SEED = -1  # as in A1111: -1 picks a random seed (which is then recorded)


def side(name: str, value, max_side: int) -> int:
    value = integer(name, value, minimum=MIN_SIDE, maximum=max_side)
    if value % 8:
        raise ParameterError(name, value, f"must be a multiple of 8 from {MIN_SIDE} to {max_side} "
                                          f"(the VAE turns 8x8 pixels into one latent), e.g. {value // 8 * 8}")
    return value


def settings(*, prompt, negative_prompt, sampler, steps, guidance_scale, seed, num_images,
             width=None, height=None, max_side=None, strength=None) -> None:
    """Check everything a generation call takes; returns nothing, raises on the first bad value."""
    text("prompt", prompt, allow_empty=True)
    text("negative_prompt", negative_prompt, allow_empty=True)
    samplers.check(sampler)
    integer("steps", steps, minimum=1, maximum=MAX_STEPS)
    number("guidance_scale", guidance_scale, minimum=0.0, maximum=MAX_CFG)
    if seed != RANDOM_SEED:
        integer("seed", seed, minimum=0, maximum=2**32 - 1)
    integer("num_images", num_images, minimum=1, maximum=MAX_IMAGES)
    if width is not None:
        side("width", width, max_side)
    if height is not None:
        side("height", height, max_side)
    if strength is not None:
        number("strength", strength, minimum=0.0, maximum=1.0)


def image_size(name: str, image, max_side: int) -> None:
    """An input image must already have a size the model takes; `fit` makes one that does."""
    width, height = image.size
    for side_name, value in (("width", width), ("height", height)):
        if value % 8 or not MIN_SIDE <= value <= max_side:
            raise ParameterError(name, f"{width}x{height} image",
                                 f"its {side_name} must be a multiple of 8 from {MIN_SIDE} to {max_side}; "
                                 "resize it first with nbhelpers.diffusion.fit(image)")


def load_image(source, name: str = "input_image", grey: bool = False):
    """An 8-bit RGB (or, for masks, grey) PIL image from a path or a PIL image of any mode (nbhelpers.images: 16-bit, palette,
    transparency...); an unreadable or missing file is a ParameterError naming it."""
    from PIL import Image

    from nbhelpers import images

    convert = images.to_grey if grey else images.to_rgb
    if isinstance(source, Image.Image):
        return convert(source)
    if not isinstance(source, (str, Path)) or not str(source):
        raise ParameterError(name, source, "must be a path to an image file (PNG, JPEG, WebP) or a PIL image")
    return convert(images.open_image(source, name))
