"""Draws the input images of 03_inpainting: default.png, a house on a hill under a sky (for the real models), and
lab_circle.png, a red circle on a white background in the lab SD's own style (for the `tiny` profile).

Flat shapes drawn with PIL, no randomness, so running this again reproduces the file byte for byte, and the
picture is free of any licence question. Run: python data/images/make_default.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 512
BAND = 32  # the sky gradient in flat bands: compresses to a few KB and still reads as a gradient


def draw() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    for top in range(0, SIZE, BAND):  # sky: light at the horizon, deeper blue above
        t = top / SIZE
        draw.rectangle((0, top, SIZE, top + BAND), fill=(int(70 + 120 * t), int(130 + 90 * t), int(210 + 30 * t)))
    draw.ellipse((360, 60, 440, 140), fill=(255, 214, 102))  # sun
    draw.ellipse((-200, 330, 420, 760), fill=(86, 150, 74))  # near hill
    draw.ellipse((220, 360, 760, 800), fill=(64, 122, 58))  # far hill
    draw.rectangle((150, 300, 290, 400), fill=(222, 200, 170))  # house
    draw.polygon([(135, 300), (220, 230), (305, 300)], fill=(170, 60, 50))  # roof
    draw.rectangle((205, 345, 235, 400), fill=(110, 70, 40))  # door
    draw.rectangle((165, 320, 195, 345), fill=(150, 200, 230))  # window
    draw.rectangle((245, 320, 275, 345), fill=(150, 200, 230))
    return image


def draw_lab() -> Image.Image:
    from nbhelpers.lab import shapes

    return shapes.draw(shapes.ShapeSpec("red", "circle", "white"), 64)


if __name__ == "__main__":
    for name, image in [("default.png", draw()), ("lab_circle.png", draw_lab())]:
        target = Path(__file__).with_name(name)
        image.save(target, format="PNG", optimize=True)
        print(f"wrote {target} ({target.stat().st_size} bytes)")
