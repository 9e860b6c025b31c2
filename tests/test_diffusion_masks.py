"""Masks: shapes, from images, feathering, exact compositing, outpainting canvases."""

import numpy as np
import pytest
from PIL import Image

from nbhelpers.checks import ParameterError
from nbhelpers.diffusion import fit, masks


def test_shapes_cover_their_box():
    rect = np.asarray(masks.shape((64, 48), (8, 8, 24, 40)))
    assert rect.shape == (48, 64) and rect[8:40, 8:24].min() == 255 and rect.sum() == 255 * 16 * 32
    ellipse = np.asarray(masks.shape((64, 64), (0, 0, 64, 64), "ellipse"))
    assert ellipse[32, 32] == 255 and ellipse[0, 0] == 0
    with pytest.raises(ParameterError, match="box"):
        masks.shape((64, 64), (0, 0, 80, 10))
    with pytest.raises(ParameterError, match="shape"):
        masks.shape((64, 64), (0, 0, 8, 8), "star")


def test_from_image_checks_size_and_thresholds():
    painted = Image.new("RGB", (32, 32), (100, 100, 100))
    assert np.asarray(masks.from_image(painted, size=(32, 32), threshold=50)).min() == 255
    with pytest.raises(ParameterError) as error:
        masks.from_image(painted, size=(64, 64))
    assert error.value.name == "mask"


def test_blur_feathers_the_edge_only():
    mask = masks.shape((64, 64), (16, 16, 48, 48))
    soft = np.asarray(masks.blur(mask, 4))
    assert soft[32, 32] == 255 and soft[0, 0] == 0 and 0 < soft[32, 15] < 255
    assert masks.blur(mask, 0) is mask


def test_composite_keeps_unmasked_pixels_exactly():
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = masks.blur(masks.shape((64, 64), (20, 20, 44, 44), "ellipse"), 3)
    out, m = np.asarray(masks.composite(generated, original, mask)), np.asarray(mask)
    assert np.array_equal(out[m == 0], np.asarray(original)[m == 0])
    assert np.array_equal(out[m == 255], np.asarray(generated)[m == 255])


def test_outpaint_canvas():
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    canvas, mask = masks.outpaint_canvas(image, left=16, bottom=8, overlap=4)
    assert canvas.size == mask.size == (80, 72)
    m = np.asarray(mask)
    assert np.array_equal(np.asarray(canvas)[0:64, 16:80], np.asarray(image))
    assert m[:, :20].min() == 255 and m[64:, :].min() == 255 and m[0:60, 20:80].max() == 0
    with pytest.raises(ParameterError, match="left"):
        masks.outpaint_canvas(image, left=10)


def test_fit_makes_multiples_of_eight():
    assert fit(Image.new("RGB", (1000, 750)), 512).size == (512, 384)
    assert fit(Image.new("RGB", (30, 30)), 64).size == (64, 64)


def test_region_change_measures_inside_and_outside_the_mask():
    original = Image.new("RGB", (64, 64), (100, 100, 100))
    mask = masks.shape((64, 64), (0, 0, 32, 64))  # the left half is repainted
    returned = Image.new("RGB", (64, 64), (104, 100, 100))  # what a VAE round trip does: everything shifts a bit
    returned.paste((255, 100, 100), (0, 0, 32, 64))
    raw = masks.region_change(returned, original, mask)
    assert raw["masked_change"] == pytest.approx(155 / 3 / 255, abs=1e-3)
    assert raw["unmasked_change"] == pytest.approx(4 / 3 / 255, abs=1e-3) and not raw["unmasked_identical"]
    pasted = masks.region_change(masks.composite(returned, original, mask), original, mask)
    assert pasted["unmasked_change"] == 0.0 and pasted["unmasked_identical"]
    assert pasted["masked_change"] == raw["masked_change"]
