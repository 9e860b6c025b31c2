"""The dress rehearsal: every `t4` and `large` code path at the models' real architecture, offline, on the CPU.

`nbhelpers run --profile t4 --random-weights` sets NBHELPERS_RANDOM_WEIGHTS=1 for the notebook kernels. Then:
- `get_profile` returns the profile with rehearsal defaults (`settings.py`): fewest steps, smallest resolution,
  shortest generation that still run every cell;
- `loaders.resolve_source` turns each Hub id into a local folder of RANDOM weights built from the architecture
  shipped in data/configs (`checkpoints.py`), so the real `from_pretrained`, conversion and training code runs;
- summaries say `random_weights: true`; pictures and texts are noise, labelled as such (`NOISE`).

Nothing is downloaded. Speed and memory are the CPU's in float32 (or bfloat16 where stated), not a GPU's.
"""

from __future__ import annotations

import os

ENV = "NBHELPERS_RANDOM_WEIGHTS"
NOISE = "NOISE: random weights (rehearsal), not a result"


def cpu_dtype(model_id: str) -> str:
    """The dtype a rehearsal model is stored and run in on the CPU."""
    from nbhelpers.rehearsal.sources import source

    return source(model_id).dtype


def enabled() -> bool:
    """True inside a rehearsal run (the runner's --random-weights, or the variable set by hand)."""
    return os.environ.get(ENV, "") not in ("", "0")


def override(task: str, name: str, default=None):
    """Inside a rehearsal, its value of the `task` setting `name` (`settings.OVERRIDES`); `default` outside one."""
    if not enabled():
        return default
    from nbhelpers.rehearsal.settings import OVERRIDES

    return OVERRIDES[task][name]


def label_figure(fig):
    """In a rehearsal, write the noise notice across the top of a matplotlib figure (unchanged otherwise)."""
    if enabled():
        fig.text(0.5, 0.999, NOISE, ha="center", va="top", color="red", fontsize=9)
    return fig


def label_image(image):
    """In a rehearsal, a copy of a PIL picture with a red noise notice above it (the picture itself otherwise)."""
    if not enabled():
        return image
    from PIL import Image, ImageDraw

    strip = 14
    labelled = Image.new("RGB", (image.width, image.height + strip), "white")
    labelled.paste(image.convert("RGB"), (0, strip))
    ImageDraw.Draw(labelled).text((2, 1), "NOISE: random weights", fill=(200, 0, 0))
    return labelled
