"""nbhelpers: the code behind the notebooks of the MoE + Stable Diffusion T4 curriculum.

Importing this package is cheap on purpose: torch, diffusers and transformers are imported only by the
functions that need them, so `nbhelpers doctor` answers in a blink and the model cache can be configured
before those libraries read their environment variables.
"""

__version__ = "0.1.0"
REPO = "t4-curriculum/moe-diffusion-t4"

_LAZY = {
    "start": "nbhelpers.notebook",
    "NotebookRun": "nbhelpers.notebook",
    "doctor": "nbhelpers.env",
    "get_profile": "nbhelpers.profiles",
    "ParameterError": "nbhelpers.checks",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nbhelpers' has no attribute {name!r}")
