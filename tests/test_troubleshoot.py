import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers import troubleshoot

DOC = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"

SEEN = [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "CUDA out of memory"),
    ("AssertionError: Torch not compiled with CUDA enabled", "Torch not compiled with CUDA / no GPU"),
    ("OSError: libbitsandbytes_cuda121.so: undefined symbol: cquantize_blockwise_fp16_nf4",
     "C++/CUDA extension errors after a Colab update"),
    ("ValueError: mount failed", "Drive mount failed or timed out"),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error.", "401/403 for a gated model"),
    ("OSError: [Errno 28] No space left on device", "No space left on device"),
    ("Your session crashed after using all available RAM.", "Session crashed after using all available RAM"),
    ("step 120: loss is nan", "NaN loss or black images in fp16"),
    ("Error displaying widget: model not found", "Widgets do not show"),
    ("steps=0 is not allowed: must be an integer from 1 to 500", "A parameter is not allowed"),
    ("weights='x.ckpt' is not allowed: is a Python pickle, which can run arbitrary code", "Pickled weights refused"),
    ("ModuleNotFoundError: No module named 'compel'", "ModuleNotFoundError or an old version after pip install"),
]


@pytest.mark.parametrize("text, title", SEEN)
def test_error_texts_lead_to_their_entry(text, title):
    assert troubleshoot.diagnose(text).title == title


def test_unknown_errors_have_no_diagnosis():
    assert troubleshoot.diagnose(KeyError("width")) is None


def test_every_documented_error_is_known_to_the_diagnosis():
    headings = re.findall(r"^## (.+)$", DOC.read_text(), re.MULTILINE)
    assert len(headings) >= 12
    for heading in headings:
        example = re.findall(r"`([^`]+)`", heading)
        text = example[0] if example else heading
        assert troubleshoot.diagnose(text) is not None, heading


def test_pretend_small_gpu_triggers_the_real_recovery():
    from nbhelpers import tiny
    from nbhelpers.diffusion.generate import Engine
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny.sd_components(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    said = []
    engine = Engine("tiny", pipe=pipe, say=said.append)
    reference = engine.txt2img("a red circle", steps=2, num_images=3, seed=5).images
    with troubleshoot.pretend_small_gpu(pipe, max_images=1):
        with pytest.raises(torch.cuda.OutOfMemoryError):
            pipe.unet(torch.zeros(4, 4, 8, 8), 1, encoder_hidden_states=torch.zeros(4, 77, 32))
        result = engine.txt2img("a red circle", steps=2, num_images=3, seed=5)
    assert result.changes == ["batch size 3 -> 1 (same images: one seed per image)"]
    assert any("retrying with batch size 3 -> 1" in line for line in said)
    for before, after in zip(reference, result.images):
        difference = np.asarray(before, dtype=int) - np.asarray(after, dtype=int)
        assert np.abs(difference).max() <= 2  # the same seeds give the same pictures
    assert pipe.unet.forward.__func__ is type(pipe.unet).forward  # the pretend limit is gone
