"""How good: quality figures where their models can be had, and a clear note where they cannot.

- tiny: the lab checker (`nbhelpers.lab.checker`) reads back colour and shape from each picture of the lab SD and
  compares them with the prompt (random-weight models score at chance level).
- t4 and bigger: CLIP score (torchmetrics) with the profile's CLIP model, when torchmetrics is installed.
- FID and LPIPS need Inception / VGG / AlexNet weights from the Hub or GitHub: skipped, with a note saying so.
"""

from __future__ import annotations

import importlib.util

CLIP_MODEL = "openai/clip-vit-base-patch16"
SKIPPED = {
    "fid": "skipped: FID needs Inception weights (downloaded from GitHub/the Hub) and hundreds of images",
    "lpips": "skipped: LPIPS needs VGG/AlexNet backbone weights (downloaded); not available offline",
}


def lab_accuracy(pipe, n: int = 8, steps: int = 10, seed: int = 0, guidance_scale: float | None = None) -> dict:
    """Generate `n` captioned shapes and score them with the lab checker (or a note when it is absent).

    The guidance defaults to the tiny profile's, where the lab SD's colours are most accurate."""
    if importlib.util.find_spec("nbhelpers.lab.checker") is None:
        return {"lab_accuracy": None, "note": "skipped: nbhelpers.lab.checker is not installed"}
    import torch

    from nbhelpers.lab import checker, shapes
    from nbhelpers.profiles import get_profile

    if guidance_scale is None:
        guidance_scale = get_profile("tiny").default("txt2img", "guidance_scale")
    specs = shapes.sample(n, seed=seed, jitter=False)
    images = []
    for i, spec in enumerate(specs):
        with torch.inference_mode():
            images += pipe(shapes.caption(spec), num_inference_steps=steps, height=64, width=64,
                           guidance_scale=guidance_scale,
                           generator=torch.Generator("cpu").manual_seed(seed + i)).images
    report = checker.score(images, specs)
    return {"lab_accuracy": report["accuracy"], "n": report["n"], "images": images,
            "prompts": [shapes.caption(s) for s in specs]}


def clip_score(images, prompts) -> dict:
    """CLIP score (0-100, higher = closer to the prompt) with torchmetrics, or a note when it cannot run."""
    if importlib.util.find_spec("torchmetrics") is None:
        return {"clip_score": None, "note": "skipped: torchmetrics is not installed (pip install torchmetrics)"}
    import numpy as np
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore

    metric = CLIPScore(model_name_or_path=CLIP_MODEL)
    batch = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in images])
    return {"clip_score": round(float(metric(batch, list(prompts))), 2), "model": CLIP_MODEL}


def evaluate(profile_name: str, pipe=None, images=None, prompts=None) -> dict:
    """The quality figures this profile can compute, plus notes for the skipped ones."""
    result = dict(SKIPPED)
    if profile_name == "tiny":
        result["lab"] = lab_accuracy(pipe) if pipe is not None else {"note": "no pipeline given"}
        result["clip_score"] = "skipped under tiny: CLIP weights come from the Hub"
    else:
        result["clip"] = clip_score(images, prompts) if images else {"note": "no images given"}
    return result
