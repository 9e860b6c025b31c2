"""Score pictures of one coloured shape: which background, which colour, which shape.

    prediction = analyse(image)             # {"background": "white", "colour": "red", "shape": "circle", ...}
    report = score(images, specs)           # per-image predictions and accuracies against what was asked
    score_prompt(images, "a red circle on a white background")   # the accuracies, or None for other prompts

How it reads a picture (64x64 or any square size):
1. background: the median colour of the border, named by the nearest background colour;
2. shape region: pixels far from the background colour (relative to the farthest ones, so a washed-out
   generation still separates);
3. colour: the median of the region's core, named by the nearest shape colour;
4. shape: templates. Every shape is drawn with the region's centroid and area at a few rotations; the best
   intersection-over-union names the shape. Centroid and area come from image moments, so position and size
   do not matter, only the outline does.
"""

from __future__ import annotations

from functools import lru_cache

from nbhelpers.lab import shapes

ROTATIONS = tuple(range(-20, 21, 5))  # training jitter is +-15 degrees


def _array(image):
    import numpy as np

    if hasattr(image, "convert"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        from nbhelpers.checks import ParameterError

        raise ParameterError("image", getattr(array, "shape", None), "an RGB image (PIL or HxWx3 array)")
    return array if array.max() > 1.5 else array * 255


def _nearest(rgb, palette: dict) -> str:
    import numpy as np

    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name], dtype=np.float32) - rgb) ** 2)))


@lru_cache(maxsize=None)
def _unit_area(shape: str, size: int) -> float:
    """Area in pixels of `shape` drawn at scale 1 (area grows with the square of the scale)."""
    return float(_template(shape, size, 0.5, (0.5, 0.5), 0.0).sum()) / 0.25


def _template(shape: str, size: int, scale: float, centre: tuple, rotation: float):
    """Boolean mask of a shape, tested at pixel centres: ~100x faster than drawing it with PIL."""
    import numpy as np
    from matplotlib.path import Path as Polygon

    grid = (np.arange(size) + 0.5)
    xs, ys = np.meshgrid(grid, grid)
    cx, cy, radius = centre[0] * size, centre[1] * size, scale * size / 2
    polygon = shapes.outline(shape, cx, cy, radius, rotation)
    if polygon is None:
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return Polygon(polygon).contains_points(points).reshape(size, size)


def region(image):
    """(background name, background rgb, boolean mask of the shape, distance map) of one picture."""
    import numpy as np

    array = _array(image)
    border = np.concatenate([array[:2].reshape(-1, 3), array[-2:].reshape(-1, 3),
                             array[:, :2].reshape(-1, 3), array[:, -2:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    distance = np.sqrt(((array - background_rgb) ** 2).sum(axis=2))
    far = np.percentile(distance, 99)
    return _nearest(background_rgb, shapes.BACKGROUNDS), background_rgb, distance > max(40.0, 0.5 * far), distance


def analyse(image) -> dict:
    import numpy as np

    array = _array(image)
    size = array.shape[0]
    background, _, mask, distance = region(array)
    area = int(mask.sum())
    if area < 4:  # nothing drawn
        return {"background": background, "colour": None, "shape": None, "iou": 0.0, "area": area / size ** 2}
    core = distance >= np.percentile(distance[mask], 50)
    colour = _nearest(np.median(array[mask & core], axis=0), shapes.COLOURS)
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean() + 0.5) / size, float(ys.mean() + 0.5) / size)
    best, best_iou = None, -1.0
    for shape in shapes.SHAPES:
        scale = float(np.sqrt(area / _unit_area(shape, size)))
        for rotation in ROTATIONS:
            template = _template(shape, size, scale, centre, rotation)
            iou = float((template & mask).sum() / max(1, (template | mask).sum()))
            if iou > best_iou:
                best, best_iou = shape, iou
    return {"background": background, "colour": colour, "shape": best, "iou": round(best_iou, 3),
            "area": round(area / size ** 2, 3)}


def score(images, specs) -> dict:
    """Predictions for `images` and accuracies against `specs` (what each image should show)."""
    from nbhelpers.checks import ParameterError

    images, specs = list(images), list(specs)
    if len(images) != len(specs) or not images:
        raise ParameterError("specs", len(specs), f"one spec per image ({len(images)} images)")
    predictions = [analyse(image) for image in images]
    hits = {key: [p[key] == getattr(s, key) for p, s in zip(predictions, specs)]
            for key in ("colour", "shape", "background")}
    hits["both"] = [c and s for c, s in zip(hits["colour"], hits["shape"])]
    return {"predictions": predictions, "accuracy": {k: round(sum(v) / len(v), 4) for k, v in hits.items()},
            "n": len(images)}


def score_prompt(images, prompt: str) -> dict | None:
    """`score`'s accuracies for pictures drawn from one lab caption; None when `prompt` is not a lab caption."""
    spec = shapes.parse_caption(prompt)
    images = list(images)
    return None if spec is None else score(images, [spec] * len(images))["accuracy"]
