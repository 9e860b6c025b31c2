"""Synthetic captioned images: one coloured shape on a plain background, drawn deterministically with PIL.

    spec = ShapeSpec("red", "circle", "white")
    draw(spec, 64)        # a 64x64 RGB image
    caption(spec)         # "a red circle on a white background"

The lab Stable Diffusion learns from these, the trainers fine-tune on them, and `nbhelpers.lab.checker` scores
generations against what the caption asked for. Shapes are drawn at 4x and downsampled for smooth edges.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 30),
    "purple": (150, 50, 180), "orange": (250, 140, 30),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
# Colour-shape pairs never seen in training: they measure whether the model composes words it knows.
HELD_OUT = (("red", "star"), ("green", "triangle"), ("blue", "cross"), ("yellow", "diamond"),
            ("purple", "circle"), ("orange", "square"))
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeSpec:
    colour: str
    shape: str
    background: str = "white"
    scale: float = 0.6  # shape's extent as a fraction of the image side
    centre: tuple = (0.5, 0.5)  # fractions of width and height
    rotation: float = 0.0  # degrees

    def __post_init__(self):
        from nbhelpers import checks

        checks.choice("colour", self.colour, COLOURS)
        checks.choice("shape", self.shape, SHAPES)
        checks.choice("background", self.background, BACKGROUNDS)


def caption(spec: ShapeSpec) -> str:
    return f"a {spec.colour} {spec.shape} on a {spec.background} background"


def parse_caption(text: str) -> ShapeSpec | None:
    """The spec a lab caption asks for ("a red circle on a white background", also "... with stripes ..."), or
    None for any other prompt (a real model's prompt is not something the lab checker can score)."""
    import re

    colour, shape, background = ("|".join(names) for names in (COLOURS, SHAPES, BACKGROUNDS))
    found = re.fullmatch(rf"an? ({colour}) ({shape})(?: with stripes)? on an? ({background}) background",
                         text.strip().lower())
    return ShapeSpec(*found.groups()) if found else None


def outline(shape: str, cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]] | None:
    """Polygon vertices of a shape (None for the circle, which PIL draws as an ellipse)."""
    def ring(points: int, radii, start: float):
        return [(cx + r * math.cos(math.radians(start + rotation + 360 * k / points)),
                 cy + r * math.sin(math.radians(start + rotation + 360 * k / points)))
                for k, r in zip(range(points), radii)]

    if shape == "circle":
        return None
    if shape == "square":
        return ring(4, [radius * 1.0] * 4, 45)
    if shape == "diamond":
        return ring(4, [radius, radius * 0.7] * 2, -90)
    if shape == "triangle":
        return ring(3, [radius] * 3, -90)
    if shape == "star":
        return ring(10, [radius, radius * 0.42] * 5, -90)
    if shape == "cross":
        arm = radius * 0.35
        corners = [(arm, radius), (arm, arm), (radius, arm), (radius, -arm), (arm, -arm), (arm, -radius),
                   (-arm, -radius), (-arm, -arm), (-radius, -arm), (-radius, arm), (-arm, arm), (-arm, radius)]
        turn = math.radians(rotation)
        return [(cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn))
                for x, y in corners]
    raise ValueError(shape)


def draw(spec: ShapeSpec, size: int = 64):
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[spec.background])
    pen = ImageDraw.Draw(image)
    cx, cy, radius = spec.centre[0] * big, spec.centre[1] * big, spec.scale * big / 2
    polygon = outline(spec.shape, cx, cy, radius, spec.rotation)
    if polygon is None:
        pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=COLOURS[spec.colour])
    else:
        pen.polygon(polygon, fill=COLOURS[spec.colour])
    return image.resize((size, size), Image.LANCZOS)


def mask(spec: ShapeSpec, size: int = 64):
    """The shape's own region as a white-on-black mask: where the checker reads the colour."""
    white = ShapeSpec("yellow", spec.shape, "black", spec.scale, spec.centre, spec.rotation)
    return draw(white, size).convert("L").point(lambda v: 255 if v > 60 else 0)


def training_pairs() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT]


def sample(n: int, seed: int = 0, pairs=None, backgrounds=None, jitter: bool = True) -> list[ShapeSpec]:
    """`n` specs drawn from `pairs` (default: the training pairs) with random placement, size and rotation."""
    rng = random.Random(seed)
    pairs = list(pairs or training_pairs())
    backgrounds = list(backgrounds or BACKGROUNDS)
    specs = []
    for _ in range(n):
        colour, shape = rng.choice(pairs)
        if jitter:
            scale = rng.uniform(0.45, 0.7)
            centre = (rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
            rotation = rng.uniform(-15, 15)
        else:
            scale, centre, rotation = 0.6, (0.5, 0.5), 0.0
        specs.append(ShapeSpec(colour, shape, rng.choice(backgrounds), scale, centre, rotation))
    return specs
