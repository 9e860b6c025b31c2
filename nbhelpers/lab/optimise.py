"""The lines every lab training stage shares: one optimizer step, and the progress report."""

from __future__ import annotations


def optimizer_step(loss, optimizer, schedule, clip_params=None) -> None:
    """Backward, optional gradient clipping at norm 1, AdamW step, learning-rate schedule step."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    optimizer.step()
    schedule.step()


def report(bar, stage: str, step: int, loss: float) -> None:
    """The loss on the progress bar, and in the log (training runs for an hour, often with output to a file)."""
    bar.set_postfix(loss=f"{loss:.4f}")
    print(f"{stage} step {step} loss {loss:.4f}", flush=True)
