"""What notebook 06 judges quality on: the image sets per profile, and the runs that fill them.

tiny (`lab_quality`): the lab SD draws `n` lab captions; the reference is `n` other drawings of the same caption
distribution (`nbhelpers.lab.shapes`). Two baselines frame the figures: a second, independent set of drawings (the
floor: what FID/KID give for two samples of the very same distribution at this n) and uniform noise (the ceiling a
model must stay far below). Diversity: 4 captions x 4 seeds, next to the diversity of 4 drawings per caption.

t4 / large (`hub_quality`): the first `n` COCO 2017 validation images and their first captions (fetched once and
kept in the output folder); each model draws the captions; FID/KID against the COCO images, CLIP score and
PickScore against the captions, LPIPS diversity over 4 seeds of 4 captions.
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers.bench import quality

SEEDS_PER_PROMPT = 4
DIVERSITY_PROMPTS = 4


def generate(pipe, prompts, seed: int = 0, steps: int | None = None, batch: int = 16, **options) -> list:
    """One image per prompt, prompt i with seed `seed + i`, in batches (progress bar over the batches)."""
    import torch
    from tqdm.auto import tqdm

    images = []
    for start in tqdm(range(0, len(prompts), batch), desc="generate", leave=False):
        chunk = list(prompts[start:start + batch])
        generators = [torch.Generator("cpu").manual_seed(seed + start + k) for k in range(len(chunk))]
        with torch.inference_mode():
            images += pipe(chunk, generator=generators, num_inference_steps=steps, **options).images
    return images


def noise(n: int, size: int = 64, seed: int = 0) -> list:
    """`n` pictures of uniform noise: a model worth anything is far closer to the reference than these."""
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    arrays = (torch.rand(n, size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    return [Image.fromarray(a) for a in arrays]


def lab_quality(pipe, n: int = 48, seed: int = 0, steps: int = 10) -> dict:
    """Every tiny-profile figure: lab-FID/KID of the lab SD and of the two baselines, lab-LPIPS diversity of
    generations and of drawings, lab accuracy. Returns the figures and the images worth looking at."""
    from nbhelpers.lab import checker, shapes
    from nbhelpers.profiles import get_profile

    guidance = get_profile("tiny").default("txt2img", "guidance_scale")
    options = {"height": 64, "width": 64, "guidance_scale": guidance}
    asked = shapes.sample(n, seed=seed)
    prompts = [shapes.caption(s) for s in asked]
    generated = generate(pipe, prompts, seed, steps, **options)
    reference = [shapes.draw(s) for s in shapes.sample(n, seed=seed + 1)]
    floor = [shapes.draw(s) for s in shapes.sample(n, seed=seed + 2)]

    captions = list(dict.fromkeys(prompts))[:DIVERSITY_PROMPTS]
    repeated = [c for c in captions for _ in range(SEEDS_PER_PROMPT)]
    seeds = generate(pipe, repeated, seed + 10_000, steps, **options)
    groups = [seeds[i:i + SEEDS_PER_PROMPT] for i in range(0, len(seeds), SEEDS_PER_PROMPT)]
    drawn_groups = [[shapes.draw(s) for s in shapes.sample(SEEDS_PER_PROMPT, seed=seed + 3 + i,
                                                            pairs=[(spec.colour, spec.shape)],
                                                            backgrounds=[spec.background])]
                    for i, spec in enumerate(shapes.parse_caption(c) for c in captions)]

    judges = quality.lab_judges()
    figures = quality.measure(judges, generated, reference, groups=groups)
    for name, images in (("drawings", floor), ("noise", noise(n, seed=seed))):
        fid = quality.fid(reference, images, judges.features)
        kid, _ = quality.kid(reference, images, judges.features)
        figures[f"baseline_{name}"] = {"fid": round(fid, 3), "kid": round(kid, 5), "n": len(images)}
    figures["lpips_diversity"]["drawings"] = round(quality.diversity(drawn_groups, judges.lpips), 4)
    report = checker.score(generated, asked)
    figures["lab_accuracy"] = report["accuracy"]
    figures["lab_accuracy_n"] = report["n"]
    return {"figures": figures, "generated": generated, "reference": reference, "groups": groups,
            "prompts": prompts, "captions": captions}


def coco_reference(n: int, folder, dataset: tuple = quality.REFERENCE_DATASET) -> tuple[list, list]:
    """(images, captions): the first `n` rows of the reference dataset, streamed once and kept in `folder`."""
    import json

    from PIL import Image

    from nbhelpers import persist

    folder = Path(folder)
    index = folder / "captions.json"
    if index.exists() and len(json.loads(index.read_text())) >= n:
        captions = json.loads(index.read_text())[:n]
        return [Image.open(folder / f"{i:05d}.png").convert("RGB") for i in range(n)], captions
    from datasets import load_dataset

    rows = load_dataset(dataset[0], split=dataset[1], streaming=True).take(n)
    images, captions = [], []
    for i, row in enumerate(rows):
        image = row["image"].convert("RGB")
        with persist.atomic_path(folder / f"{i:05d}.png") as part:
            image.save(part, format="PNG")
        images.append(image)
        captions.append(row["text"] if row.get("text") else row["captions"][0])
    persist.atomic_write_json(index, captions)
    return images, captions


def hub_quality(model_names, n: int, folder, device: str | None = None, seed: int = 0, steps: int = 25,
                judges=None) -> dict:
    """Figures per model (GPU profiles): FID/KID vs COCO images, CLIP score and PickScore vs their captions, LPIPS
    diversity over seeds. Each model is loaded, used and freed before the next. In a rehearsal (random weights,
    offline): the same code with random-weight judges of the real architectures, `REHEARSAL_IMAGES` lab drawings
    and captions standing in for COCO (on the Hub), at the rehearsal's smallest size; every figure is noise."""
    import gc

    import torch

    from nbhelpers import rehearsal
    from nbhelpers.bench import models

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    options, dtype = {}, "fp16"
    if rehearsal.enabled():
        n, steps, dtype = min(n, REHEARSAL_IMAGES), rehearsal.override("txt2img", "steps"), "bf16"
        options = {side: rehearsal.override("txt2img", side) for side in ("height", "width")}
        reference, captions = rehearsal_reference(n, seed)
        judges = judges or rehearsal_judges()
    else:
        reference, captions = coco_reference(n, Path(folder) / "reference")
    judges = judges or quality.hub_judges()
    repeated = [c for c in captions[:DIVERSITY_PROMPTS] for _ in range(SEEDS_PER_PROMPT)]
    results = {}
    for name in model_names:
        pipe = models.load(name, device, dtype)
        generated = generate(pipe, captions, seed, steps, batch=4, **options)
        seeds = generate(pipe, repeated, seed + 10_000, steps, batch=4, **options)
        del pipe
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        groups = [seeds[i:i + SEEDS_PER_PROMPT] for i in range(0, len(seeds), SEEDS_PER_PROMPT)]
        results[name] = quality.measure(judges, generated, reference, groups=groups, prompts=captions, device=device)
    return results


REHEARSAL_IMAGES = 4  # the fewest that still give FID, KID (subsets of 2) and LPIPS pairs


def rehearsal_reference(n: int, seed: int = 0) -> tuple[list, list]:
    """The rehearsal's stand-in for COCO (which is on the Hub): `n` lab drawings and their captions."""
    from nbhelpers.lab import shapes

    asked = shapes.sample(n, seed=seed + 1)
    return [shapes.draw(s) for s in asked], [shapes.caption(s) for s in asked]


def rehearsal_judges():
    """`quality.hub_judges()` loading random-weight CLIP and PickScore of the real architectures (local folders)."""
    from nbhelpers.rehearsal.checkpoints import folder_for

    clip, preference = str(folder_for(quality.CLIP_MODEL)), str(folder_for(quality.PREFERENCE_MODEL))
    return quality.hub_judges(clip=clip, preference=(preference, preference))


def table(figures: dict, model: str = "") -> list[dict]:
    """One row per figure (metric, value, images, measured with, note) for `bench.markdown`."""
    rows = []
    for key in ("fid", "kid", "lpips_diversity", "clip_score", "preference"):
        figure = figures.get(key)
        if not figure:
            continue
        if figure.get("value") is None:
            rows.append({"model": model, "metric": key, "value": "-", "note": figure["reason"]})
            continue
        n = figure.get("n_generated", figure.get("n"))
        if key == "lpips_diversity":
            n = f"{figure['prompts']} prompts x {figure['seeds']} seeds"
        value = figure["value"] if key != "kid" else f"{figure['value']} +- {figure['std']}"
        note = figure.get("note") or ""
        if key == "lpips_diversity" and "drawings" in figure:
            note = f"drawings of the same captions: {figure['drawings']}"
        rows.append({"model": model, "metric": figure["metric"], "value": value, "images": n,
                     "measured with": figure.get("features") or figure.get("model") or "", "note": note})
    for name in ("drawings", "noise"):
        baseline = figures.get(f"baseline_{name}")
        if baseline:
            rows.append({"model": f"baseline: {name}", "metric": "lab-FID / lab-KID",
                         "value": f"{baseline['fid']} / {baseline['kid']}", "images": baseline["n"],
                         "note": "independent drawings: the floor at this n" if name == "drawings"
                         else "uniform noise: what a model must beat"})
    return rows


def picture(judged: dict, columns: int = 8):
    """Generated pictures above reference drawings, then each diversity caption's seeds side by side."""
    from nbhelpers.diffusion import grids

    rows = [judged["generated"][:columns], judged["reference"][:columns]]
    labels = ["generated", "reference"]
    for caption, group in zip(judged["captions"], judged["groups"]):
        rows.append(group)
        labels.append(" ".join(caption.split()[1:3]) + ": seeds")
    return grids.make_grid(rows, row_labels=labels, title="lab SD vs drawings; seeds of one caption")
