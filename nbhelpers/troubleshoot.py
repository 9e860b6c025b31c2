"""From the error text a learner sees to what it means and how to fix it.

    diagnose("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")  -> the "CUDA out of memory" entry
    install()   # in a notebook: every error is followed by its diagnosis

The long version of each entry is docs/troubleshooting.md (same headings); `nbhelpers doctor` runs the checks a
program can run. `pretend_small_gpu` lets 07_troubleshooting show the out-of-memory recovery on any machine.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from nbhelpers import REPO

DOCS = f"https://github.com/{REPO}/blob/main/docs/troubleshooting.md"


@dataclass(frozen=True)
class Entry:
    title: str  # the heading in docs/troubleshooting.md
    patterns: tuple  # regular expressions matched against the error text, case-insensitive
    check: str
    fix: str

    def matches(self, text: str) -> bool:
        return any(re.search(pattern, text, re.IGNORECASE) for pattern in self.patterns)

    def __str__(self) -> str:
        return f"{self.title}\n  check: {self.check}\n  fix:   {self.fix}\n  more:  {DOCS}"


ENTRIES = (
    Entry("CUDA out of memory", (r"CUDA out of memory", r"OutOfMemoryError", r"out of GPU memory"),
          "nbhelpers doctor: VRAM free / total; nbhelpers plan MODEL --gpu t4",
          "free memory (del pipe; gc.collect(); torch.cuda.empty_cache()), fewer images, smaller size, "
          "pipe.vae.enable_tiling(), pipe.enable_model_cpu_offload(); generation retries lighter by itself"),
    Entry("Torch not compiled with CUDA / no GPU", (r"Torch not compiled with CUDA", r"Found no NVIDIA driver",
                                                    r"no CUDA GPUs are available", r"torch cannot use it"),
          "nbhelpers doctor: GPU line and 'A GPU is present but torch cannot use it'",
          "Colab: Runtime > Change runtime type > T4 GPU; if torch was reinstalled, disconnect and delete the runtime"),
    Entry("C++/CUDA extension errors after a Colab update", (r"undefined symbol", r"libcudart\.so",
                                                             r"CUDA Setup failed", r"cannot open shared object file"),
          "nbhelpers doctor: library versions outside the tested ranges",
          "uninstall or reinstall the extension for the current torch (never pin torch), then restart the session"),
    Entry("ModuleNotFoundError or an old version after pip install", (r"ModuleNotFoundError", r"No module named"),
          "was the package installed after Python imported it?", "Runtime > Restart session, then run from the top"),
    Entry("Drive mount failed or timed out", (r"mount failed", r"Mountpoint must not already contain files",
                                              r"drive.*timed out", r"Timed out.*mount"),
          "nbhelpers doctor: Drive mounted / not mounted",
          "run the mount cell again and accept the pop-up; force_remount=True; or mount_drive=False"),
    Entry("401/403 for a gated model", (r"\b401\b", r"\b403\b", r"GatedRepoError", r"is restricted", r"gated repo",
                                        r"HubAccessError", r"Hub refused"),
          "nbhelpers doctor --check-access: which gated models this token cannot read",
          "accept the model's licence on its Hub page and add a read token as the Colab secret HF_TOKEN"),
    Entry("No space left on device", (r"No space left on device", r"Errno 28"),
          "nbhelpers doctor: disk free / total", "huggingface-cli delete-cache; delete old runs from the workspace"),
    Entry("Session crashed after using all available RAM", (r"all available RAM", r"Killed", r"MemoryError"),
          "nbhelpers doctor: RAM available / total; nbhelpers plan MODEL --gpu t4",
          "load fp16 safetensors straight to the GPU, close other notebooks, convert big models shard by shard"),
    Entry("NaN loss or black images in fp16", (r"\bnan\b", r"invalid value encountered in cast", r"black image"),
          "is the loss NaN? does image.getextrema() give all zeros?",
          "upcast the VAE (SDXL), prefer bf16 where supported, lower the learning rate, keep the warm-up"),
    Entry("Training diverges", (r"diverg", r"loss (is )?(exploding|increasing)"),
          "the loss curve and the validation images the trainer writes",
          "LoRA lr 1e-4, DreamBooth 5e-6, prior preservation on, fewer steps; pick an earlier checkpoint"),
    Entry("Runtime disconnected", (r"disconnected", r"session (has )?(ended|expired)", r"Runtime died"),
          "is the workspace on Drive? are there checkpoints in it?",
          "keep the workspace on Drive and restart training with --resume latest: it continues exactly"),
    Entry("Widgets do not show", (r"Error displaying widget", r"model not found", r"Open Browser Console"),
          "nbhelpers doctor: 'ipywidgets 8.x on Colab'", "pip install ipywidgets==7.7.1, then restart the session"),
    Entry("Pickled weights refused", (r"is a Python pickle",),
          "is the file a .ckpt, .bin or .pt?",
          "use the .safetensors version, or allow_pickle=True only for a file whose source you trust"),
    Entry("A parameter is not allowed", (r"is not allowed:",),
          "the message names the parameter and the allowed values", "change that parameter and run again"),
)


def diagnose(error) -> Entry | None:
    """The first entry whose patterns match the error (an exception or its text), or None."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    return next((entry for entry in ENTRIES if entry.matches(text)), None)


def install() -> bool:
    """In IPython/Jupyter: show the usual traceback, then the diagnosis of any error that has one."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return False

    def handler(shell, kind, value, traceback, tb_offset=None):
        shell.showtraceback((kind, value, traceback), tb_offset=tb_offset)
        entry = diagnose(value)
        if entry is not None:
            print(f"\nnbhelpers troubleshooting: {entry}")

    shell.set_custom_exc((Exception,), handler)
    return True


@contextlib.contextmanager
def pretend_small_gpu(pipe, max_images: int = 1):
    """Make `pipe`'s UNet raise CUDA's out-of-memory error for batches of more than `max_images` images.

    Classifier-free guidance runs two UNet passes per image in one batch, hence the factor 2.
    """
    import torch

    unet, forward = pipe.unet, pipe.unet.forward

    def limited(sample, *args, **kwargs):
        if sample.shape[0] > 2 * max_images:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {sample.shape[0] * 0.5:.2f} GiB "
                                              "(pretend: nbhelpers.troubleshoot.pretend_small_gpu)")
        return forward(sample, *args, **kwargs)

    unet.forward = limited
    try:
        yield
    finally:
        del unet.forward  # back to the class's forward
