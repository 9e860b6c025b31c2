"""DreamBooth's class-prior preservation: class images from the base model, and the loss that keeps them.

Fine-tuning on five pictures of *your* dog with "a photo of sks dog" also teaches the model that every dog looks
like yours (language drift). Prior preservation trains, in the same batch, on images the *base* model drew for the
plain class prompt ("a photo of a dog") and adds their loss, weighted by `prior_loss_weight` (1.0 in the DreamBooth
paper and diffusers' script). The class images are made once, cached on disk, and reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from nbhelpers import persist

CLASS_FILE = "class-{:04d}.png"


def split_prior_loss(errors, prior_loss_weight: float):
    """The batch holds instance examples in its first half and class examples in its second half; `errors` holds
    one (already weighted) error per example.

    loss = mean(instance half) + prior_loss_weight * mean(class half). Returns (loss, instance_loss, prior_loss).
    """
    instance_errors, class_errors = errors.chunk(2)
    instance_loss, prior_loss = instance_errors.mean(), class_errors.mean()
    return instance_loss + prior_loss_weight * prior_loss, instance_loss, prior_loss


def class_folder(root, prompt: str, model_key: str, resolution: int, steps: int) -> Path:
    """The cache folder for one class prompt drawn by one base model at one size: `<root>/<slug>-<hash>`."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "class"
    digest = hashlib.sha256(json.dumps([prompt, model_key, resolution, steps]).encode()).hexdigest()[:10]
    return Path(root) / f"{slug}-{digest}"


def model_key(source: str) -> str:
    """Names the base model's weights: a Hub id, or for a local folder the names, sizes and times of its weights
    (so rebuilt local weights do not reuse stale class images)."""
    folder = Path(source)
    if not folder.is_dir():
        return source
    files = sorted(folder.rglob("*.safetensors"))
    return source + "|" + "|".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def class_batch(resolution: int) -> int:
    """Class images drawn at once: 4 up to 512 px, then fewer (four SDXL images at 1024 with guidance would not fit
    a T4; nbhelpers.plan.training predicts this phase with the same number)."""
    return max(1, min(4, 4 * 512 * 512 // (resolution * resolution)))


def ensure_class_images(pipe, prompt: str, count: int, folder, *, seed: int, resolution: int, steps: int,
                        guidance_scale: float = 7.5, batch_size: int | None = None,
                        progress: bool = True) -> list[Path]:
    """`count` class images in `folder`, generating only the missing ones. Image i always comes from seed + i, so a
    half-filled cache (a disconnect) is completed with exactly the images it would have had."""
    import torch
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / CLASS_FILE.format(i) for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    persist.atomic_write_json(folder / "class_images.json", {"prompt": prompt, "resolution": resolution,
                                                              "steps": steps, "seed": seed})
    batch_size = batch_size or class_batch(resolution)
    bar = tqdm(total=len(missing), desc="class images", disable=not progress or not missing)
    for start in range(0, len(missing), batch_size):
        chunk = missing[start:start + batch_size]
        generators = [torch.Generator().manual_seed(seed + i) for i in chunk]
        with torch.no_grad():
            images = pipe(prompt=[prompt] * len(chunk), num_inference_steps=steps, guidance_scale=guidance_scale,
                          height=resolution, width=resolution, generator=generators).images
        for i, image in zip(chunk, images):
            with persist.atomic_path(paths[i]) as tmp:
                image.save(tmp, format="PNG")
        bar.update(len(chunk))
    bar.close()
    return paths
