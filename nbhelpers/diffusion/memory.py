"""Out of GPU memory during generation: free what we can, retry with a lighter setting, and say what changed.

The ladder, lightest change first:
1. a smaller batch (halved until 1). Nothing about the pictures changes: every image has its own seed.
2. VAE tiling: decode the latents in tiles. Peak memory of the decode drops a lot; seams are rarely visible.
3. model CPU offload: only the component that is working sits on the GPU. Slower, much less memory.
If all of that still runs out of memory, the error is raised with advice.
"""

from __future__ import annotations

import gc


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def lighten(pipe, batch_size: int, applied: list[str]) -> tuple[int, str] | None:
    """One step down the ladder: (new batch size, what changed), or None when nothing lighter is left."""
    import torch

    if batch_size > 1:
        return batch_size // 2, f"batch size {batch_size} -> {batch_size // 2} (same images: one seed per image)"
    if "vae tiling" not in applied and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
        return batch_size, "vae tiling"
    if "model cpu offload" not in applied and torch.cuda.is_available() and hasattr(pipe, "enable_model_cpu_offload"):
        pipe.enable_model_cpu_offload()
        return batch_size, "model cpu offload"
    return None


def run_in_batches(run_batch, seeds: list[int], pipe, say=print):
    """`run_batch(seeds) -> images`, over all `seeds`; on out-of-memory, lighten and retry.

    Returns (images, changes): `changes` lists what was made lighter (empty when nothing was needed).
    """
    batch_size, changes = len(seeds), []
    while True:
        failure = None
        try:
            images = []
            for start in range(0, len(seeds), batch_size):
                images += run_batch(seeds[start:start + batch_size])
            return images, changes
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, everything else re-raised
            if not is_out_of_memory(error):
                raise
            failure = str(error).split("\n")[0]
        # Outside the except block: the traceback (and the tensors its frames hold) is gone, so memory frees.
        free()
        step = lighten(pipe, batch_size, [c.split(" ->")[0] for c in changes])
        if step is None:
            raise MemoryError(f"out of GPU memory even after {', '.join(changes) or 'freeing memory'} ({failure}). "
                              "Try a smaller width/height, fewer images, or restart the runtime to free memory.")
        batch_size, change = step
        changes.append(change)
        say(f"Out of GPU memory; retrying with {change}.")
