"""Is a lab picture striped? The check behind notebook 04's before/after (the style its LoRA teaches).

    bands(image)                 # {"rows": 3, "columns": 1}: separate bands of ink along each axis
    is_striped(image)            # True when one axis shows at least MIN_BANDS bands
    stripe_rate(images)          # the fraction of pictures that are striped
    HELD_OUT_PROMPTS             # what notebook 04 draws before and after its LoRA

How it reads a picture: the lab checker separates the shape's pixels ("ink") from the background. A solid shape,
cut row by row, is one block of inked rows; a shape with background-coloured stripes across it is several blocks
with (almost) empty rows between them. Counting those blocks along the rows (horizontal stripes) and along the
columns (vertical ones) is the whole test. Three blocks, not two: two blobs side by side are not a pattern.
"""

from __future__ import annotations

MIN_BANDS = 3
# Colour/shape pairs that neither the LoRA's training images (data/train/make.py) nor the lab model's held-out
# pairs use: the LoRA must carry the style over to shapes it was not shown striped.
HELD_OUT_PROMPTS = [f"a {colour} {shape} with stripes on a white background"
                    for colour, shape in (("green", "square"), ("yellow", "circle"), ("blue", "triangle"),
                                          ("red", "diamond"))]
# A row belongs to a band when its ink is at least this share of the fullest row: the background-coloured gaps
# between stripes hold almost no ink, while the tapering rows of a solid circle or star stay above it.
BAND_LEVEL = 0.1
MIN_GAP = 2  # pixels (at 64 px): a gap thinner than this is a ragged edge inside a solid shape, not a stripe


def _runs(inked, min_gap: int) -> int:
    """Bands in a row of booleans: runs of True, where a gap thinner than `min_gap` does not split a band."""
    from itertools import groupby

    merged = []  # [value, length] runs, thin gaps absorbed into the band before them
    for value, group in groupby(bool(v) for v in inked):
        length = len(list(group))
        if not value and length < min_gap and merged and merged[-1][0]:
            value = True
        if merged and merged[-1][0] == value:
            merged[-1][1] += length
        else:
            merged.append([value, length])
    return sum(1 for value, _ in merged if value)


def bands(image) -> dict:
    """Separate bands of ink along the rows and along the columns of one picture (64 px or any square size)."""
    from nbhelpers.lab import checker

    _, _, ink, _ = checker.region(image)
    scale = max(1, round(ink.shape[0] / 64))  # MIN_GAP is given at 64 px
    counts = {}
    for axis, name in ((1, "rows"), (0, "columns")):
        profile = ink.sum(axis=axis).astype(float)
        if profile.max() <= 0:
            counts[name] = 0
            continue
        counts[name] = _runs(profile >= BAND_LEVEL * profile.max(), MIN_GAP * scale)
    return counts


def is_striped(image) -> bool:
    return max(bands(image).values()) >= MIN_BANDS


def stripe_rate(images) -> float:
    images = list(images)
    return round(sum(is_striped(image) for image in images) / len(images), 4) if images else 0.0
