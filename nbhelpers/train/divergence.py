"""Stopping a run whose loss or weights stop being finite numbers, before anything NaN is saved or exported.

A learning rate far too high (1e30 instead of 1e-4) turns the LoRA's weights into NaN within a step or two; every
later loss is NaN and the exported LoRA would be NaN too, silently. The trainer checks each step's loss (a float it
already has) and the trainable weights before each checkpoint and before the export (one pass over a few MB of
LoRA weights), and stops with a one-line error naming learning_rate and the step. Earlier checkpoints were checked
the same way when written, so every checkpoint on disk is finite.
"""

from __future__ import annotations

import math
from pathlib import Path

from nbhelpers.checks import ParameterError


def stopped(config, step: int, what: str, output) -> ParameterError:
    from nbhelpers.train import checkpoints

    kept = checkpoints.latest(output)
    where = (f"the last finite checkpoint, {kept}, is kept (resume from it with a lower learning rate in a new "
             f"--output)" if kept else "no checkpoint was kept")
    return ParameterError("learning_rate", config.learning_rate,
                          f"training diverged: {what} at step {step}. Lower learning_rate (e.g. 10x) or set "
                          f"max_grad_norm; {where}; nothing was exported")


def check_loss(config, step: int, loss: float, output) -> None:
    if not math.isfinite(loss):
        raise stopped(config, step, f"the loss was {loss}", output)


def check_weights(config, step: int, params, output) -> None:
    import torch

    for parameter in params:
        if not torch.isfinite(parameter.detach()).all():
            raise stopped(config, step, "the trained weights hold NaN or infinity", Path(output))
