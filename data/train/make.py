"""Make the small training sets shipped in data/train (deterministic: same files on every run).

    python data/train/make.py

- lora/:       13 captioned images of a style the lab shapes never have: large shapes crossed by horizontal
               stripes, "a red circle with stripes on a white background".
- dreambooth/: 5 images of one subject, a purple disc with a yellow centre dot (purple circles are held out of the
               lab model's training), for the identifier prompt "a sks shape on a white background".
Images are 128x128 so that training at 64 (tiny) and at 512 (t4) both resize them.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

from nbhelpers.lab import shapes

SIZE = 128
HERE = Path(__file__).resolve().parent
DREAMBOOTH_PROMPT = "a sks shape on a white background"
CLASS_PROMPT = "a shape on a white background"
# Every colour and every shape at least twice. Notebook 04 tests on pairs that are not here
# (nbhelpers.lab.stripes.HELD_OUT_PROMPTS); neither uses the pairs the lab model itself never saw (shapes.HELD_OUT).
LORA_PAIRS = [("red", "circle"), ("blue", "square"), ("green", "star"), ("yellow", "triangle"), ("orange", "cross"),
              ("purple", "diamond"), ("blue", "circle"), ("red", "square"), ("yellow", "cross"), ("orange", "circle"),
              ("purple", "triangle"), ("blue", "star"), ("green", "diamond")]


def striped(spec: shapes.ShapeSpec, size: int = SIZE, period: int = SIZE // 4):
    """The lab shape crossed by horizontal bands of the background colour (only inside the shape).

    Why so broad and so square to the grid: the lab VAE turns each 8x8 pixel block of a 64 px image into one latent,
    and it was only ever trained on solid shapes. Bands half a period thick (8 px at 64) that start on block
    boundaries survive its round trip as visible stripes; thinner or diagonal ones come back as a solid blob."""
    image = shapes.draw(spec, size)
    bands = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(bands)
    for top in range(0, size, period):
        pen.rectangle([0, top, size, top + period // 2 - 1], fill=255)
    inside = ImageChops.multiply(shapes.mask(spec, size), bands)
    return Image.composite(Image.new("RGB", (size, size), shapes.BACKGROUNDS[spec.background]), image, inside)


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
    rng = random.Random(6)
    for i, (colour, shape) in enumerate(LORA_PAIRS):
        # Large shapes, so that three or more bands cross each one; every fourth on gray for variety.
        spec = shapes.ShapeSpec(colour, shape, "gray" if i % 4 == 3 else "white", rng.uniform(0.72, 0.85),
                                (rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)), rng.uniform(-10, 10))
        striped(spec).save(lora / f"stripes-{i}.png", optimize=True)
        (lora / f"stripes-{i}.txt").write_text(f"a {spec.colour} {spec.shape} with stripes on a {spec.background} "
                                               "background\n")
    for i, (scale, centre) in enumerate([(0.6, (0.5, 0.5)), (0.5, (0.42, 0.45)), (0.7, (0.55, 0.52)),
                                         (0.55, (0.5, 0.58)), (0.65, (0.46, 0.5))]):
        subject(scale, centre).save(dreambooth / f"subject-{i}.png", optimize=True)


if __name__ == "__main__":
    make(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
