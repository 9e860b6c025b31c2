"""Make the small training sets shipped in data/train (deterministic: same files on every run).

    python data/train/make.py

- lora/:       8 captioned images of a style the lab shapes never have: shapes filled with diagonal stripes,
               "a red circle with stripes on a white background".
- dreambooth/: 5 images of one subject, a purple disc with a yellow centre dot (purple circles are held out of the
               lab model's training), for the identifier prompt "a sks shape on a white background".
Images are 128x128 so that training at 64 (tiny) and at 512 (t4) both resize them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

from nbhelpers.lab import shapes

SIZE = 128
HERE = Path(__file__).resolve().parent
DREAMBOOTH_PROMPT = "a sks shape on a white background"
CLASS_PROMPT = "a shape on a white background"


def striped(spec: shapes.ShapeSpec, size: int = SIZE, period: int = 16):
    """The lab shape with diagonal pale bands across it (only inside the shape)."""
    image = shapes.draw(spec, size)
    bands = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(bands)
    for offset in range(-size, size, period):
        pen.polygon([(offset, 0), (offset + period // 2, 0), (offset + period // 2 + size, size), (offset + size, size)],
                    fill=255)
    inside = ImageChops.multiply(shapes.mask(spec, size), bands)
    return Image.composite(Image.new("RGB", (size, size), (250, 250, 250)), image, inside)


def subject(scale: float, centre: tuple, size: int = SIZE):
    """The DreamBooth subject: a purple disc with a yellow dot in its middle."""
    image = shapes.draw(shapes.ShapeSpec("purple", "circle", "white", scale, centre), size)
    pen = ImageDraw.Draw(image)
    cx, cy, r = centre[0] * size, centre[1] * size, scale * size * 0.14
    pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shapes.COLOURS["yellow"])
    return image


def make(root: Path = HERE) -> None:
    lora, dreambooth = root / "lora", root / "dreambooth"
    for folder in (lora, dreambooth):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    pairs = [("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "triangle"),
             ("orange", "cross"), ("purple", "diamond"), ("blue", "circle"), ("red", "square")]
    for i, (spec, pair) in enumerate(zip(shapes.sample(8, seed=6, pairs=pairs, backgrounds=["white", "gray"]), pairs)):
        spec = shapes.ShapeSpec(pair[0], pair[1], spec.background, spec.scale, spec.centre, spec.rotation)
        striped(spec).save(lora / f"stripes-{i}.png", optimize=True)
        (lora / f"stripes-{i}.txt").write_text(f"a {spec.colour} {spec.shape} with stripes on a {spec.background} "
                                               "background\n")
    for i, (scale, centre) in enumerate([(0.6, (0.5, 0.5)), (0.5, (0.42, 0.45)), (0.7, (0.55, 0.52)),
                                         (0.55, (0.5, 0.58)), (0.65, (0.46, 0.5))]):
        subject(scale, centre).save(dreambooth / f"subject-{i}.png", optimize=True)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
