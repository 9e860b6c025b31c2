"""Comparison grids: one setting changes along each axis, everything else (seed included) stays fixed, so the
differences you see are caused by that setting alone.

    picture = sampler_steps_grid(engine, "a lighthouse", ["Euler a", "DPM++ 2M Karras"], [10, 25], seed=1)
    save(picture, run.path("images/samplers.png")); show(picture)
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers import persist

LABEL_HEIGHT = 24
MIN_CELL = 128  # tiny 64x64 images are scaled up so that they can be seen at all


def make_grid(rows: list[list], row_labels=(), col_labels=(), title: str = ""):
    """One PIL image from a table of PIL images, with labels on the left and on top."""
    from PIL import Image, ImageDraw

    cell_w, cell_h = rows[0][0].size
    scale = max(1, -(-MIN_CELL // min(cell_w, cell_h)))
    cell_w, cell_h = cell_w * scale, cell_h * scale
    font = _font()
    left = (max((_text_width(font, str(label)) for label in row_labels), default=0) + 12) if row_labels else 0
    top = LABEL_HEIGHT * ((1 if col_labels else 0) + (1 if title else 0))
    columns = max(len(row) for row in rows)
    canvas = Image.new("RGB", (left + columns * cell_w, top + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    for c, label in enumerate(col_labels):
        draw.text((left + c * cell_w + 4, top - LABEL_HEIGHT + 4), str(label), fill="black", font=font)
    for r, row in enumerate(rows):
        if r < len(row_labels):
            draw.text((4, top + r * cell_h + cell_h // 2 - 6), str(row_labels[r]), fill="black", font=font)
        for c, image in enumerate(row):
            canvas.paste(image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST), (left + c * cell_w, top + r * cell_h))
    from nbhelpers import rehearsal

    return rehearsal.label_image(canvas)  # a rehearsal grid says it is noise


def sampler_steps_grid(engine, prompt: str, sampler_names, steps_list, seed: int = 0, **settings):
    """Rows: samplers; columns: step counts. Same seed everywhere."""
    rows = [[engine.txt2img(prompt, sampler=name, steps=steps, seed=seed, num_images=1, **settings).images[0]
             for steps in steps_list] for name in sampler_names]
    return make_grid(rows, list(sampler_names), [f"{steps} steps" for steps in steps_list], f"seed {seed}")


def cfg_sweep(engine, prompt: str, scales, seed: int = 0, **settings):
    """One row: the same seed at several CFG (guidance) scales."""
    row = [engine.txt2img(prompt, guidance_scale=scale, seed=seed, num_images=1, **settings).images[0]
           for scale in scales]
    return make_grid([row], [], [f"CFG {scale:g}" for scale in scales], f"seed {seed}")


def seed_grid(engine, prompt: str, seed: int = 0, rows: int = 2, columns: int = 2, **settings):
    """rows x columns images from seeds seed, seed+1, ... in one batch (equal to single runs, see generate)."""
    result = engine.txt2img(prompt, seed=seed, num_images=rows * columns, **settings)
    table = [result.images[r * columns:(r + 1) * columns] for r in range(rows)]
    labels = [f"seed {s}" for s in result.seeds[:columns]]
    return make_grid(table, [f"+{r * columns}" for r in range(rows)], labels, "seed grid")


def save(image, path) -> Path:
    """Save a PNG atomically."""
    with persist.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def show(*images) -> None:
    """Show PIL images inline in a notebook (printed as text elsewhere)."""
    from IPython.display import display

    for image in images:
        display(image)


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return right - left
