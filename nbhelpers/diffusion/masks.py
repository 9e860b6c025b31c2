"""Masks for inpainting: white (255) = repaint, black (0) = keep. Drawn from shapes, taken from an image,
softened at the edge, and used at the end to paste the new pixels into the original.

Why the final paste matters: the pipeline works in latent space, where one latent pixel covers 8x8 image pixels,
and the VAE's decode never returns the input exactly. Without compositing, the "kept" area comes back slightly
changed (colours shift, fine texture blurs). `composite` copies every pixel where the mask is 0 straight from the
original, so the unmasked area is bit-for-bit the input.
"""

from __future__ import annotations

from nbhelpers import checks
from nbhelpers.checks import ParameterError

SHAPES = ("rectangle", "ellipse")


def shape(size, box, kind: str = "rectangle"):
    """A mask of `size` (width, height) with a white rectangle or ellipse in `box` (left, top, right, bottom)."""
    from PIL import Image, ImageDraw

    checks.choice("shape", kind, SHAPES)
    width, height = size
    left, top, right, bottom = box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ParameterError("box", box, f"must be (left, top, right, bottom) inside the {width}x{height} image")
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    (draw.rectangle if kind == "rectangle" else draw.ellipse)((left, top, right - 1, bottom - 1), fill=255)
    return mask


def from_image(mask_image, size=None, threshold: int | None = None):
    """A mask from any image (a painted PNG, an uploaded file): greyscale; optionally hard-thresholded.

    `size` is the image it must match; a different size is an error rather than a silent resize, because a
    stretched mask no longer covers what the user painted.
    """
    from nbhelpers.images import to_grey

    mask = to_grey(mask_image)  # a 16-bit mask scaled, not clipped to all-white
    if size is not None and mask.size != tuple(size):
        raise ParameterError("mask", f"{mask.size[0]}x{mask.size[1]}",
                             f"must be the same size as the image, {size[0]}x{size[1]}")
    if threshold is not None:
        checks.integer("threshold", threshold, minimum=0, maximum=255)
        mask = mask.point(lambda value: 255 if value >= threshold else 0)
    return mask


def blur(mask, radius: float):
    """Feather the mask edge (Gaussian blur, what A1111 calls "mask blur" and diffusers `mask_processor.blur`)."""
    from PIL import ImageFilter

    radius = checks.number("mask_blur", radius, minimum=0, maximum=256)
    return mask if radius == 0 else mask.filter(ImageFilter.GaussianBlur(radius))


def composite(generated, original, mask):
    """Generated pixels where the mask is white, original ones where it is black, a blend in between."""
    from PIL import Image

    if generated.size != original.size:
        generated = generated.resize(original.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), original.convert("RGB"), mask.convert("L"))


def region_change(result, original, mask) -> dict:
    """How much `result` differs from `original` inside the mask and outside it: mean absolute change (0..1) of
    the repainted pixels (mask > 0) and of the kept ones (mask == 0), and whether the kept ones are identical.
    Measure the pipeline's own output with it to see what compositing fixes, and the composite to check the fix."""
    import numpy as np

    new = np.asarray(result.convert("RGB").resize(original.size), dtype=np.float32)
    old = np.asarray(original.convert("RGB"), dtype=np.float32)
    repaint = np.asarray(mask.convert("L").resize(original.size)) > 0
    change = np.abs(new - old).mean(axis=2) / 255
    return {"masked_change": round(float(change[repaint].mean()), 4),
            "unmasked_change": round(float(change[~repaint].mean()), 4),
            "unmasked_identical": bool(np.array_equal(new[~repaint], old[~repaint]))}


def outpaint_canvas(image, left: int = 0, top: int = 0, right: int = 0, bottom: int = 0, overlap: int = 0):
    """(canvas, mask) for outpainting: the image on a bigger canvas, the new border masked for repainting.

    The border starts as a stretched, blurred copy of the image, which gives the model matching colours to
    continue (a flat grey or noise border tends to leave a visible seam). `overlap` also repaints that many pixels of the original's edge.
    """
    from PIL import Image, ImageFilter

    for name, value in (("left", left), ("top", top), ("right", right), ("bottom", bottom)):
        checks.integer(name, value, minimum=0, maximum=4096)
        if value % 8:
            raise ParameterError(name, value, "must be a multiple of 8 (the canvas must stay a multiple of 8)")
    checks.integer("overlap", overlap, minimum=0, maximum=min(image.size) // 2)
    width, height = image.size
    canvas = image.convert("RGB").resize((width + left + right, height + top + bottom), Image.BILINEAR)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(left, top, right, bottom) / 4 or 0))
    canvas.paste(image.convert("RGB"), (left, top))
    mask = Image.new("L", canvas.size, 255)
    keep = (left + (overlap if left else 0), top + (overlap if top else 0),
            left + width - (overlap if right else 0), top + height - (overlap if bottom else 0))
    mask.paste(0, keep)
    return canvas, mask

