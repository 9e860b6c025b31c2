"""The stripe detector behind notebook 04: striped training images yes, solid shapes and two blobs no."""

from PIL import Image, ImageDraw

from nbhelpers.lab import shapes, stripes
from nbhelpers.train import data, shipped_data


def test_the_shipped_striped_images_are_striped():
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in
              data.load_folder(shipped_data("lora"), 64).images]
    assert stripes.stripe_rate(images) >= 0.9


def test_solid_shapes_are_not_striped():
    pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    assert stripes.stripe_rate(shapes.draw(spec) for spec in shapes.sample(60, seed=1, pairs=pairs)) == 0.0


def test_bands_are_counted_along_either_axis_and_two_blobs_are_not_a_pattern():
    def picture(boxes):
        image = Image.new("RGB", (64, 64), shapes.BACKGROUNDS["white"])
        for box in boxes:
            ImageDraw.Draw(image).rectangle(box, fill=shapes.COLOURS["blue"])
        return image

    rows = picture([(10, y, 54, y + 5) for y in (8, 24, 40)])
    columns = picture([(x, 10, x + 5, 54) for x in (8, 24, 40, 52)])
    assert stripes.bands(rows) == {"rows": 3, "columns": 1} and stripes.is_striped(rows)
    assert stripes.bands(columns)["columns"] == 4 and stripes.is_striped(columns)
    assert not stripes.is_striped(picture([(4, 4, 24, 24), (40, 40, 60, 60)]))
    assert not stripes.is_striped(picture([(10, 10, 54, 30), (10, 32, 54, 40), (10, 42, 54, 54)]))  # 1-pixel seams


def test_an_empty_picture_has_no_bands():
    assert stripes.bands(Image.new("RGB", (64, 64), (245, 245, 245))) == {"rows": 0, "columns": 0}
    assert stripes.stripe_rate([]) == 0.0
