"""nbhelpers: the code behind the notebooks of the MoE + Stable Diffusion T4 curriculum.

Importing this package is cheap on purpose: torch, diffusers and transformers are imported only by the
functions that need them, so `nbhelpers doctor` answers in a blink and the model cache can be configured
before those libraries read their environment variables.
"""

__version__ = "0.1.0"
REPO = "t4-curriculum/moe-diffusion-t4"

_LAZY = {
    "start": "notebook",
    "NotebookRun": "notebook",
    "get_profile": "profiles",
    "ParameterError": "checks",
}

from nbhelpers.lazy import exports  # noqa: E402
from nbhelpers import quiet  # noqa: E402

__getattr__, __dir__ = exports(__name__, _LAZY)
quiet.install()  # before anything imports diffusers, whose import prints the notes
