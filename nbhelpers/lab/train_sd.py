"""Train the lab Stable Diffusion: a tiny SD 1.x pipeline that draws the prompted shape in the prompted colour.

    python -m nbhelpers.lab.train_sd --out data/lab/sd --seed 0

Stages, each kept in --work so that one can be rerun alone (`--stages unet,save,eval`):
1. vae:     AutoencoderKL trained on shape images (L1 + MSE reconstruction, a whisper of KL); its latent std sets
            `scaling_factor`, so the UNet sees unit-variance latents as in real SD.
2. latents: every training image encoded once (posterior mean and std) and every caption embedded once by the
            frozen, randomly initialised CLIP text encoder: random embeddings already tell "red" from "blue".
3. unet:    UNet2DConditionModel trained on the cached latents (epsilon prediction, min-SNR weighting, 10% empty
            captions for classifier-free guidance, EMA weights).
4. decoder: the VAE decoder alone trained further with the shape's pixels weighted up (sharper, truer colours);
            the encoder is frozen, so the latents the UNet learned stay valid (it can run beside `unet`).
5. save:    a StableDiffusionPipeline folder (safetensors) with a DPM++ 2M scheduler.
6. eval:    generations through the real pipeline, scored by `nbhelpers.lab.checker`, on seen and held-out pairs.

The shipped weights came from vae,latents,unet (2,500 steps) and decoder,decoder, then two `--resume` UNet runs
(2,500 and 3,000 steps at lr 5e-4), then save,eval: about 47 minutes on a shared 2-core CPU. The exact commands,
timings and scores are in data/lab/sd/MODEL_CARD.md.

The architecture is `nbhelpers.tiny.sd_components()`, so the lab pipeline is a drop-in replacement for the random
tiny one. Held-out colour-shape pairs (`shapes.HELD_OUT`) are never shown to any stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from nbhelpers import persist
from nbhelpers.lab import shapes
from nbhelpers.lab.optimise import optimizer_step, report

STAGES = ("vae", "latents", "unet", "decoder", "save", "eval")
GUIDANCE = 4.0  # measured best for colour at 20 steps: 3 -> 97%, 4 -> 94%, 6 -> 87% (shape ~87% for all)
STEPS = 20


def image_batch(specs, size: int = 64):
    """Shape images as a (N, 3, size, size) tensor in [-1, 1], the range the VAE works in."""
    import numpy as np
    import torch

    arrays = np.stack([np.asarray(shapes.draw(spec, size), dtype=np.float32) for spec in specs])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1


def train_vae(work: Path, seed: int, steps: int, batch: int):
    import torch

    from nbhelpers import tiny

    torch.manual_seed(seed)
    vae = tiny.sd_components()["vae"]
    # Start the posterior almost deterministic (std ~0.05): with the default std of 1 the sampling noise drowns
    # the signal and a short training run ends blurry and off-colour. The KL term may still widen it.
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -6.0
    images = image_batch(shapes.sample(4000, seed=seed))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="vae")
    for step in bar:
        x = images[torch.randint(len(images), (batch,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample(generator)).sample
        # L1 keeps edges crisp; the tiny KL only stops the posterior variance from collapsing to nothing.
        loss = (y - x).abs().mean() + ((y - x) ** 2).mean() + 1e-6 * posterior.kl().mean()
        optimizer_step(loss, optimizer, schedule)
        if step % 20 == 0:
            report(bar, "vae", step, loss.item())
    with torch.no_grad():
        std = torch.cat([vae.encode(images[i:i + 200]).latent_dist.mean for i in range(0, 1000, 200)]).std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    vae.save_pretrained(work / "vae", safe_serialization=True)
    print(f"vae done: latent std {std:.4f}, scaling_factor {1 / std:.5f}", flush=True)


def refine_decoder(work: Path, seed: int, steps: int, batch: int):
    """Train the decoder only, with the shape's pixels weighted 5x: the short first stage leaves colours off
    because the background dominates the loss. The encoder is frozen, so cached latents stay valid."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(work / "vae", use_safetensors=True)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    images = image_batch(shapes.sample(4000, seed=seed + 2))
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="decoder")
    for step in bar:
        x = images[torch.randint(len(images), (batch,), generator=generator)]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator)
        y = vae.decode(latents).sample
        foreground = ((x - x[:, :, :1, :1]).abs().sum(dim=1, keepdim=True) > 0.2).float()
        weight = 1 + 4 * foreground
        loss = (weight * ((y - x).abs() + (y - x) ** 2)).mean()
        optimizer_step(loss, optimizer, schedule)
        if step % 20 == 0:
            report(bar, "decoder", step, loss.item())
    vae.save_pretrained(work / "vae", safe_serialization=True)
    print("decoder done", flush=True)


def captions_all():
    """Every caption the lab knows, held-out pairs included (embedding a caption teaches nothing), plus ""."""
    return [""] + [shapes.caption(shapes.ShapeSpec(c, s, b)) for c in shapes.COLOURS for s in shapes.SHAPES
                   for b in shapes.BACKGROUNDS]


def embed(texts, text_encoder, tokenizer):
    """Text embeddings exactly as StableDiffusionPipeline computes them (padded to 77, no attention mask)."""
    import torch

    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


def cache_latents(work: Path, seed: int, count: int):
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from nbhelpers import tiny

    vae = AutoencoderKL.from_pretrained(work / "vae", use_safetensors=True).eval()
    parts = tiny.sd_components()
    texts = captions_all()
    specs = shapes.sample(count, seed=seed + 1)
    means, stds = [], []
    with torch.no_grad():
        for i in tqdm(range(0, count, 100), desc="latents"):
            posterior = vae.encode(image_batch(specs[i:i + 100])).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
    caption_index = torch.tensor([texts.index(shapes.caption(spec)) for spec in specs])
    tensors = {"mean": torch.cat(means), "std": torch.cat(stds), "caption": caption_index,
               "text": embed(texts, parts["text_encoder"], parts["tokenizer"])}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(work / "latents.safetensors"))
    print(f"cached {count} latents and {len(texts)} caption embeddings", flush=True)


def train_unet(work: Path, seed: int, steps: int, batch: int, lr: float, resume: bool = False):
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    from nbhelpers import tiny

    torch.manual_seed(seed)
    if resume:  # a second run continues from the saved EMA weights (a fresh optimizer and schedule)
        unet = UNet2DConditionModel.from_pretrained(work / "unet", use_safetensors=True)
        seed += 1
    else:
        unet = tiny.sd_components()["unet"]
    ema = copy.deepcopy(unet).requires_grad_(False)
    cache = load_file(str(work / "latents.safetensors"))
    scale = AutoencoderKL.load_config(work / "vae")["scaling_factor"]
    noise_scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    num_train_timesteps=1000)
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.03)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="unet")
    for step in bar:
        pick = torch.randint(len(cache["mean"]), (batch,), generator=generator)
        latents = (cache["mean"][pick] + cache["std"][pick] * torch.randn(cache["mean"][pick].shape,
                                                                          generator=generator)) * scale
        caption = cache["caption"][pick].clone()
        caption[torch.rand(batch, generator=generator) < 0.1] = 0  # the empty caption: guidance needs it
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, t)
        prediction = unet(noisy, t, cache["text"][caption]).sample
        # min-SNR-5 weighting: stops the easy low-noise steps from dominating a short training run.
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (weight * ((prediction - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        optimizer_step(loss, optimizer, schedule, clip_params=unet.parameters())
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        if step % 50 == 0:
            report(bar, "unet", step, loss.item())
        if (step + 1) % 500 == 0 or step + 1 == steps:
            ema.save_pretrained(work / "unet", safe_serialization=True)
    print("unet done", flush=True)


def save_pipeline(work: Path, out: Path):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from nbhelpers import tiny

    parts = tiny.sd_components()
    parts["vae"] = AutoencoderKL.from_pretrained(work / "vae", use_safetensors=True)
    parts["unet"] = UNet2DConditionModel.from_pretrained(work / "unet", use_safetensors=True)
    # DPM++ 2M: good pictures in 20 steps; any SD scheduler loads from this config with from_config.
    parts["scheduler"] = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012,
                                                     beta_schedule="scaled_linear", num_train_timesteps=1000,
                                                     steps_offset=1)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with persist.atomic_path(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    print(f"saved {out}", flush=True)


def evaluate(folder: Path, per_pair: int = 1, seed: int = 0, pairs=None, backgrounds=("white", "black", "gray")):
    """Generate each pair on each background `per_pair` times and score with the checker."""
    import torch
    from diffusers import StableDiffusionPipeline

    from nbhelpers.lab import checker

    pipe = StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    wanted = [shapes.ShapeSpec(c, s, b) for c, s in pairs for b in backgrounds for _ in range(per_pair)]
    images = []
    for i in tqdm(range(0, len(wanted), 18), desc="eval"):
        chunk = wanted[i:i + 18]
        generators = [torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))]
        images += pipe([shapes.caption(s) for s in chunk], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                       generator=generators).images
    return checker.score(images, wanted), images


def save_grid(images, target: Path, columns: int = 18):
    """Images side by side, rows of `columns`, as one PNG (written atomically)."""
    from PIL import Image

    size = images[0].size[0]
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * size, rows * size), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * size, (i // columns) * size))
    with persist.atomic_path(target) as tmp:
        grid.save(tmp, format="PNG")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/lab/sd")
    parser.add_argument("--work", default=None, help="intermediate results (default: the nbhelpers cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--vae-steps", type=int, default=900)
    parser.add_argument("--decoder-steps", type=int, default=800)
    parser.add_argument("--latents", type=int, default=6000)
    parser.add_argument("--unet-steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--resume", action="store_true", help="unet: continue from the saved weights")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = Path(args.work) if args.work else persist.nbhelpers_cache() / "lab-train" / out.name
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    for stage in args.stages.split(","):
        start = time.time()
        if stage == "vae":
            train_vae(work, args.seed, args.vae_steps, batch=16)
        elif stage == "decoder":
            refine_decoder(work, args.seed, args.decoder_steps, batch=16)
        elif stage == "latents":
            cache_latents(work, args.seed, args.latents)
        elif stage == "unet":
            train_unet(work, args.seed, args.unet_steps, args.batch, args.lr, resume=args.resume)
        elif stage == "save":
            save_pipeline(work, out)
        elif stage == "eval":
            scores = {}
            for name, pairs, per_pair in (("seen", shapes.training_pairs(), 1), ("held_out", shapes.HELD_OUT, 2)):
                report, images = evaluate(out, per_pair=per_pair, pairs=pairs)
                scores[name] = {**report["accuracy"], "n": report["n"]}
                save_grid(images, work / f"eval_{name}.png")
            print(json.dumps(scores), flush=True)
            persist.atomic_write_json(work / "scores.json", scores)
        else:
            raise SystemExit(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        timings[stage] = round(time.time() - start, 1)
        print(f"stage {stage} took {timings[stage]} s", flush=True)
    persist.atomic_write_json(work / f"timings-{int(time.time())}.json", timings)


if __name__ == "__main__":
    main()
