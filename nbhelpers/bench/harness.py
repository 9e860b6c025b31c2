"""The benchmark grid: every combination of model x settings, each warmed up, repeated, and reduced to medians.

Per grid point:
- it/s: denoising steps per second, timed between the first and the last step callback (text encoding and VAE
  decoding excluded, as in diffusers' published tables);
- s/image: the whole call (text encoder + denoising + VAE decode + post-processing) divided by the batch;
- peak memory: on a GPU `torch.cuda.max_memory_allocated` during the call; on the CPU the rise of the peak resident
  set size (Linux VmHWM, reset before each call) above the memory in use before it.
Warm-up calls run first and are not counted (the first call pays for lazy initialisation and, with torch.compile,
for compilation); medians of the repeats resist the odd slow run on a shared machine.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field

from nbhelpers import checks, dtypes
from nbhelpers.bench import models

DTYPES = tuple(dtypes.SHORT.values())  # the command line's short names ("fp16")
ATTENTION = ("sdpa", "eager")
PROMPT = "a red circle on a white background"


@dataclass
class Grid:
    models: list = field(default_factory=lambda: ["tiny"])
    dtypes: list = field(default_factory=lambda: ["fp32"])
    samplers: list = field(default_factory=lambda: ["DPM++ 2M"])
    steps: list = field(default_factory=lambda: [8])
    resolutions: list = field(default_factory=lambda: [64])
    batches: list = field(default_factory=lambda: [1])
    attention: list = field(default_factory=lambda: ["sdpa"])
    compile: list = field(default_factory=lambda: [False])
    channels_last: list = field(default_factory=lambda: [False])
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    threads: int | None = None  # CPU threads for torch; None leaves torch's default

    def check(self) -> "Grid":
        """Every value checked before any model is loaded; an empty axis is an error too."""
        from nbhelpers.diffusion import samplers

        axes = {"models": self.models, "dtypes": self.dtypes, "samplers": self.samplers, "steps": self.steps,
                "resolutions": self.resolutions, "batches": self.batches, "attention": self.attention,
                "compile": self.compile, "channels_last": self.channels_last}
        for name, values in axes.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise checks.ParameterError(name, values, "a non-empty list")
        for value in self.models:
            models.check(value)
        for value in self.dtypes:
            checks.choice("dtype", value, DTYPES)
        for value in self.samplers:
            samplers.check(value)
        for value in self.steps:
            checks.integer("steps", value, minimum=1, maximum=1000)
        for value in self.resolutions:
            checks.integer("resolution", value, minimum=8, maximum=4096)
            if value % 8:
                raise checks.ParameterError("resolution", value, "a multiple of 8 (the VAE works in 8x8 blocks)")
        for value in self.batches:
            checks.integer("batch", value, minimum=1, maximum=64)
        for value in self.attention:
            checks.choice("attention", value, ATTENTION)
        for name, values in (("compile", self.compile), ("channels_last", self.channels_last)):
            for value in values:
                checks.choice(name, value, (False, True))
        checks.integer("repeats", self.repeats, minimum=1, maximum=100)
        checks.integer("warmup", self.warmup, minimum=0, maximum=10)
        if self.threads is not None:
            checks.integer("threads", self.threads, minimum=1, maximum=256)
        return self

    def points(self) -> list[dict]:
        keys = ("model", "dtype", "sampler", "steps", "resolution", "batch", "attention", "compile", "channels_last")
        axes = (self.models, self.dtypes, self.samplers, self.steps, self.resolutions, self.batches,
                self.attention, self.compile, self.channels_last)
        return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def _peak_tracker(device: str):
    """(reset, read) functions for the peak memory of the next call, in bytes."""
    import torch

    if device == "cuda":
        def reset():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()

        return reset, lambda: torch.cuda.max_memory_allocated()
    from nbhelpers.plan import measure

    return measure.reset_peak, measure.peak


def _configure(pipe, point: dict, base_unet):
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from nbhelpers.diffusion import samplers

    samplers.use(pipe, point["sampler"])
    denoiser = base_unet
    if hasattr(denoiser, "set_attn_processor") and hasattr(pipe, "unet"):
        denoiser.set_attn_processor(AttnProcessor() if point["attention"] == "eager" else AttnProcessor2_0())
    denoiser.to(memory_format=torch.channels_last if point["channels_last"] else torch.contiguous_format)
    if hasattr(pipe, "unet"):
        pipe.unet = torch.compile(denoiser) if point["compile"] else denoiser


def run(grid: Grid, device: str | None = None, say=print) -> list[dict]:
    """Time every point of `grid`; returns one row per point (medians over the repeats)."""
    grid.check()
    import torch
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if grid.threads:
        # On a small shared CPU, extra OpenMP threads spin waiting for each other: one thread can be 10x faster.
        torch.set_num_threads(grid.threads)
    reset, read = _peak_tracker(device)
    rows, points = [], grid.points()
    by_model = itertools.groupby(points, key=lambda p: (p["model"], p["dtype"]))
    bar = tqdm(total=len(points), desc="bench")
    for (model, dtype), group in by_model:
        pipe = models.load(model, device, dtype)
        base_unet = getattr(pipe, "unet", None) or pipe.transformer
        for point in group:
            _configure(pipe, point, base_unet)
            step_times: list[float] = []

            def on_step(pipe_, step, timestep, kwargs):
                step_times.append(time.perf_counter())
                return kwargs

            def call():
                step_times.clear()
                start = time.perf_counter()
                with torch.inference_mode():
                    images = pipe(PROMPT, height=point["resolution"], width=point["resolution"],
                                  num_images_per_prompt=point["batch"], num_inference_steps=point["steps"],
                                  generator=torch.Generator("cpu").manual_seed(grid.seed),
                                  callback_on_step_end=on_step).images
                if device == "cuda":
                    torch.cuda.synchronize()
                return time.perf_counter() - start, images

            for _ in range(grid.warmup):
                call()
            its, seconds, peaks = [], [], []
            for _ in range(grid.repeats):
                before = reset()
                total, images = call()
                peaks.append(read() - before)
                seconds.append(total / point["batch"])
                loop = step_times[-1] - step_times[0] if len(step_times) > 1 else total
                its.append((len(step_times) - 1) / loop if len(step_times) > 1 else point["steps"] / total)
            rows.append({**point, "weights": _weights_label(model), "device": device, "threads": torch.get_num_threads(),
                         "it_per_s": round(statistics.median(its), 3),
                         "s_per_image": round(statistics.median(seconds), 4),
                         "peak_mib": round(statistics.median(peaks) / 2**20, 1),
                         "peak_kind": "peak VRAM allocated" if device == "cuda" else "peak RSS rise",
                         "repeats": grid.repeats, "images": images})
            bar.update(1)
        del pipe
    bar.close()
    return rows


def _weights_label(model: str) -> str:
    if models.is_random(model):
        return "RANDOM weights (speed/memory only)"
    return "tiny local weights" if model == "tiny" else "real weights"
