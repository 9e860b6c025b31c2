"""Measure the peak memory of a generation on the CPU, to calibrate and check the planner's activation formula.

Each measurement runs in a fresh Python process so that nothing else lives in its heap. Linux keeps the peak resident
set size in /proc/self/status (VmHWM); writing "5" to /proc/self/clear_refs resets it, so one process can measure
several settings in turn: load once, warm up once (lazy imports, thread pools), then for each setting return freed
memory to the system (malloc_trim), reset the peak, generate, and read how far the peak rose above the start.

glibc would otherwise keep big freed blocks in its heap and reuse them silently, hiding the next peak:
MALLOC_MMAP_THRESHOLD_ makes every tensor above 64 KiB its own mapping, returned to the system when freed.

    python -m nbhelpers.plan.measure '[[256, 256, 1], [512, 512, 2]]'     # prints one JSON line
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

KIB = 1024


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: the peak), in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KIB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Return freed memory to the system, restart the peak (VmHWM) from here, and give the resident bytes now.
    Public because the benchmark harness measures CPU peaks the same way."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to trim
        pass
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return status_bytes("VmRSS")


def peak() -> int:
    """Peak resident bytes since the last `reset_peak`."""
    return status_bytes("VmHWM")


def _peak_rise(run) -> int:
    start = reset_peak()
    run()
    return peak() - start


def _measure(settings: list, steps: int = 2, pipe=None, denoise: bool = True) -> dict:
    import torch

    from nbhelpers import loaders

    torch.set_num_threads(1)  # one thread: no per-thread scratch buffers, and the CPU stays shared fairly
    pipe = pipe or loaders.load_diffusion("tiny")
    weights = sum(p.numel() * p.element_size() for c in (pipe.unet, pipe.vae, pipe.text_encoder)
                  for p in c.parameters())
    prompt = "a red circle on a white background"

    def generate(width, height, batch, output_type):
        with torch.inference_mode():
            return pipe(prompt, width=width, height=height, num_images_per_prompt=batch, num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(0), output_type=output_type)

    generate(64, 64, 1, "pil")  # warm-up
    rows = []
    for width, height, batch in settings:
        latent = _peak_rise(lambda: generate(width, height, batch, "latent")) if denoise else None
        full = _peak_rise(lambda: generate(width, height, batch, "pil"))
        rows.append({"width": width, "height": height, "batch": batch, "denoise_bytes": latent,
                     "peak_bytes": full})
    return {"weights_bytes": weights, "steps": steps, "rows": rows}


def measure_tiny(settings, steps: int = 2, timeout: float = 300) -> dict:
    """Peak RSS rise (bytes) of tiny-SD generations at each (width, height, batch), measured in a subprocess.

    Returns {"weights_bytes", "steps", "rows": [{"width", "height", "batch", "denoise_bytes", "peak_bytes"}]}:
    `denoise_bytes` stops at the latents (text encoder + UNet), `peak_bytes` includes the VAE decode.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    arguments = json.dumps([[int(w), int(h), int(b)] for w, h, b in settings])
    done = subprocess.run([sys.executable, "-m", "nbhelpers.plan.measure", arguments, str(steps)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError("memory measurement failed:\n" + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_here(pipe, settings, steps: int = 2) -> dict:
    """The same measurement in this process, with an already loaded tiny pipeline (quicker, a little less clean:
    this process's heap holds other things). The mmap threshold is fixed with mallopt instead of the environment."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
    return _measure([list(s) for s in settings], steps, pipe=pipe, denoise=False)


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)))
