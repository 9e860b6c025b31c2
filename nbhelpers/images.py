"""Reading pictures: the one place where files are opened and every image mode becomes 8-bit RGB (or grey).

Why a module of its own: PIL's `convert("RGB")` clips 16-bit and 32-bit values to 255, so a mid-grey 16-bit PNG
became pure white in training and in img2img. Here every mode is scaled into 0-255 first:

- `I;16*` (16-bit PNG and TIFF) and `I` (32-bit integers; older Pillow opens 16-bit PNGs so): 0-65535 -> 0-255
- `F` (32-bit float): taken as 0-1 when it stays within it, else as 0-255 (clipped)
- alpha (`RGBA`, `LA`, `PA`, `P` or `L` with a transparent colour): composited on white
- `CMYK`, `YCbCr`, `1`, `P`, `LAB`, `HSV`: PIL's own conversion
and EXIF orientation is applied. A file is named in every error, and one whose header claims more than
`MAX_PIXELS` is refused before its pixels are decoded (a 20000x20000 PNG header is 1.6 GB of RGBA).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from nbhelpers.checks import ParameterError

MAX_PIXELS = 64 * 1024 * 1024  # 64 megapixels: any camera photo; far below what exhausts a Colab's 12.7 GB of RAM
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def open_image(path: str | os.PathLike, parameter: str):
    """The decoded image at `path` (mode unchanged). Missing, oversized or unreadable files raise ParameterError
    naming `parameter` and the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit is checked below
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ParameterError(parameter, str(path), f"an image of at most {MAX_PIXELS // 2**20} megapixels; "
                                         f"its header says {width}x{height}")
                image.load()  # decode now: a truncated file fails here, not in the middle of a run
                return image.copy()
    except FileNotFoundError:
        raise ParameterError(parameter, str(path), "an existing image file; there is none") from None
    except IsADirectoryError:
        raise ParameterError(parameter, str(path), "an image file; this is a folder") from None
    except Image.DecompressionBombError as error:
        raise ParameterError(parameter, str(path),
                             f"an image of at most {MAX_PIXELS // 2**20} megapixels ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ParameterError(parameter, str(path), f"a readable image file (PNG, JPEG, WebP); this one is corrupt or "
                             f"not an image ({error})") from None


def to_rgb(image):
    """8-bit RGB, whatever the mode: high bit depths scaled, transparency on white, EXIF rotation applied."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    image = _eight_bit(image)
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode == "LAB":  # PIL cannot go from LAB to RGB directly; its LAB is 8-bit CIELAB
        from PIL import ImageCms

        return ImageCms.applyTransform(image, ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
    return image.convert("RGB")


def to_grey(image):
    """8-bit greyscale (masks): high bit depths scaled, EXIF rotation applied; alpha is dropped, as PIL does, so a
    painted mask means what its colours say."""
    from PIL import ImageOps

    return _eight_bit(ImageOps.exif_transpose(image)).convert("L")


def _eight_bit(image):
    """Single-channel 16/32-bit and float images scaled into 8-bit `L`; other modes unchanged."""
    import numpy
    from PIL import Image

    if image.mode not in (*SIXTEEN_BIT, "I", "F"):
        return image
    values = numpy.asarray(image).astype(numpy.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and numpy.nanmax(values) <= 1.0 else 1.0
        values = numpy.nan_to_num(values) * scale
    else:
        values = values / 257.0  # 65535 -> 255 exactly
    return Image.fromarray(numpy.clip(numpy.rint(values), 0, 255).astype(numpy.uint8))


def read_rgb(path: str | os.PathLike, parameter: str):
    """`open_image` then `to_rgb`: what training data, img2img inputs and class images go through."""
    image = open_image(path, parameter)
    try:
        return to_rgb(image)
    except (ValueError, OSError) as error:
        raise ParameterError(parameter, str(path), f"an image PIL can turn into RGB; mode {image.mode} "
                             f"cannot be ({error})") from None
