"""One vocabulary for floating-point dtypes: torch's own names, "float32", "float16" and "bfloat16".

Everything that takes a dtype accepts these names, the short ones the command lines and the planner's labels show
("fp32", "fp16", "bf16") and torch dtypes; `name()` turns any of them into the one name, `to_torch()` is the one
converter to torch dtypes. Importing this module does not import torch, so the planner stays cheap.
"""

from __future__ import annotations

from nbhelpers import checks

NAMES = ("float32", "float16", "bfloat16")
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_FROM_SHORT = {short: full for full, short in SHORT.items()}


def name(dtype, parameter: str = "dtype") -> str:
    """The name of `dtype` (a name, a short name or a torch dtype); a ParameterError for anything else."""
    text = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    text = _FROM_SHORT.get(text, text)
    if text not in NAMES:
        raise checks.ParameterError(parameter, dtype, "choose one of " + ", ".join(NAMES + tuple(_FROM_SHORT)))
    return text


def short(dtype) -> str:
    """"fp16" for float16 and so on: the label shown in tables and on the command line."""
    return SHORT[name(dtype)]


def to_torch(dtype):
    """The torch dtype for `dtype` (anything `name` accepts); None stays None ("keep the stored dtype")."""
    if dtype is None:
        return None
    import torch

    return getattr(torch, name(dtype))
