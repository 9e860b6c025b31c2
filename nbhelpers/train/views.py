"""What the training notebooks look at: images from fixed seeds, grids, loss curves, a LoRA-scale slider.

    pipe = views.base_pipeline(run.profile, base)
    before = views.draw(pipe, prompts, seed=0)
    pipe.load_lora_weights(result.output, weight_name="pytorch_lora_weights.safetensors")  # plain diffusers
    views.show(views.grid([before, views.draw(pipe, prompts, seed=0)], ["before", "after"], prompts))
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers import persist
from nbhelpers.diffusion.grids import make_grid, save, show  # noqa: F401 (re-exported for the notebooks)

SMOOTHING = 0.8  # exponential moving average for the loss curves: single-step losses are very noisy


def base_pipeline(profile, base: str | None = None):
    """The model the trainer starts from (`base`, as TrainConfig takes it; None: the profile's "train_base"), ready
    for drawing."""
    from nbhelpers import loaders
    from nbhelpers.train import bases

    return loaders.load_diffusion(profile, spec=bases.resolve(profile, base).spec)


def defaults_task(profile, base: str | None = None) -> str:
    """Where `profile` keeps the training defaults for `base`: "train", or "train_sdxl" for an SDXL base. Checks
    `base` (ParameterError) before anything loads."""
    from nbhelpers.train import bases

    return bases.resolve(profile, base).defaults_task


def draw(pipe, prompts, seed: int = 0, steps: int | None = None, size: int | None = None,
         scale: float | None = None) -> list:
    """One image per prompt, each from `seed`. `scale` sets the strength of loaded LoRA weights (0 = off).
    Size and steps left as None: the model's native size (25 steps; 10 at 128 px or less), or in a rehearsal the
    rehearsal's smallest picture, as everywhere else in it (SD 1.5's native 512 px costs ~60x more on a CPU)."""
    import torch
    from nbhelpers.diffusion.generate import cpu_threads

    size, steps = draw_size_and_steps(pipe, size, steps)
    extra = {"cross_attention_kwargs": {"scale": scale}} if scale is not None else {}
    with cpu_threads(pipe), torch.no_grad():
        return [pipe(prompt, num_inference_steps=steps, height=size, width=size,
                     generator=torch.Generator().manual_seed(seed), **extra).images[0] for prompt in prompts]


def draw_size_and_steps(pipe, size: int | None = None, steps: int | None = None) -> tuple[int, int]:
    """(size, steps) that `draw` uses: those given, else the defaults its docstring names."""
    from nbhelpers import rehearsal

    size, steps = size or rehearsal.override("txt2img", "width"), steps or rehearsal.override("txt2img", "steps")
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    return size, steps or (10 if size <= 128 else 25)


def seeds(pipe, prompt: str, count: int = 4, seed: int = 0, **settings) -> list:
    """The same prompt from `count` consecutive seeds."""
    return [draw(pipe, [prompt], seed=seed + i, **settings)[0] for i in range(count)]


def grid(rows, row_labels=(), col_labels=(), title: str = ""):
    return make_grid([list(row) for row in rows], [str(r) for r in row_labels], [_short(c) for c in col_labels], title)


def folder_grid(paths, columns: int = 8, title: str = ""):
    """A grid of image files (the training set, the class images)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in list(paths)[:columns * 2]]
    return make_grid([images[i:i + columns] for i in range(0, len(images), columns)], title=title)


def loss_figure(losses: list[dict], path, keys=("loss",)):
    """Loss per step (faint) and its moving average (bold), saved as PNG atomically; returns the figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.2))
    axes = figure.subplots()
    steps = [record["step"] for record in losses]
    for key in keys:
        values = [record[key] for record in losses]
        line, = axes.plot(steps, values, alpha=0.3)
        axes.plot(steps, _smooth(values), color=line.get_color(), label=f"{key} (smoothed)")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("MSE")
    axes.legend()
    figure.tight_layout()
    from nbhelpers import rehearsal

    rehearsal.label_figure(figure)  # a rehearsal's plot says it shows noise
    with persist.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return figure


def scale_slider(pipe, prompt: str, seed: int = 0, **settings):
    """A slider for the LoRA scale (0 = base model, 1 = as trained, >1 = exaggerated) above the picture it draws.

    A slider and an Image widget in a VBox, redrawn on each move: it renders on ipywidgets 7.7.1 (Colab, classic
    notebook) and 8.x (JupyterLab 4, Notebook 7). `ipywidgets.interactive` is not used: it prints into an Output
    widget inside a box, which widgetsnbextension 3.6.10 (Colab's) fails to show ("_deserialize_state is not a
    function")."""
    import io

    import ipywidgets

    slider = ipywidgets.FloatSlider(value=1.0, min=0.0, max=1.5, step=0.25, description="LoRA scale",
                                    continuous_update=False, style={"description_width": "80px"})
    picture = ipywidgets.Image(format="png", layout=ipywidgets.Layout(width="192px", height="192px"))

    def redraw(_change=None):
        buffer = io.BytesIO()
        draw(pipe, [prompt], seed=seed, scale=slider.value, **settings)[0].resize((192, 192)).save(buffer, "PNG")
        picture.value = buffer.getvalue()

    slider.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([slider, picture])


def subject_rate(images, subject) -> float:
    """How often the lab checker sees `subject` (a shapes.ShapeSpec: colour and shape) in `images`."""
    from nbhelpers.lab import checker

    return checker.score(images, [subject] * len(images))["accuracy"]["both"]


def drift(before, after) -> float:
    """Mean absolute pixel change (0..1) between two lists of images from the same seeds: how far the model's
    idea of a prompt moved during training. Large for the class prompt = language drift."""
    import numpy

    pairs = [(numpy.asarray(a, dtype=numpy.float32), numpy.asarray(b, dtype=numpy.float32)) for a, b in zip(before, after)]
    return round(float(numpy.mean([numpy.abs(a - b).mean() for a, b in pairs]) / 255), 4)


def _smooth(values):
    out, average = [], None
    for value in values:
        average = value if average is None else SMOOTHING * average + (1 - SMOOTHING) * value
        out.append(average)
    return out


def _short(text, limit: int = 18) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def relative(path, root) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
