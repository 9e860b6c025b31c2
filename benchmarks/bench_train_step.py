"""Is the trainer's bookkeeping (accelerate, per-example generators, checkpoint hooks) free? A training step of
`nbhelpers.train` against the shortest diffusers + peft loop that does the same work, on the same tiny model,
batch, resolution, LoRA and thread count. Target: trainer / minimal <= 1.05.

    python benchmarks/bench_train_step.py [--steps 12] [--rounds 20] [--clock cpu|wall] [--json out.json]

Each round runs both sides back to back (trainer then minimal, then the other way round in the next round), each
with freshly loaded models after a garbage collection, and takes the ratio of the two sides' median step times
(the first 4 steps of each side are warm-up). The result is the median of the rounds' ratios: on a shared 2-core
virtual machine a single round scatters widely (two identical minimal loops gave round ratios from 0.65 to 1.59),
and the machine speeds up and slows down over a run, which back-to-back pairs cancel.

The clock: by default the process's CPU time (both sides run torch on one thread in this process, data loading
included), which waiting for a busy host does not inflate; `--clock wall` measures wall time instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.05
WARMUP = 4


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def trainer_steps(steps: int, folder: str, round_: int) -> list[float]:
    from nbhelpers.train import TrainConfig, loop, shipped_data, train

    loop.STEP_CLOCK = clock

    result = train(TrainConfig(mode="lora", data=str(shipped_data("lora")), output=f"{folder}/trainer-{round_}",
                               profile="tiny", steps=steps, checkpoint_every=10**6, progress=False))
    return [record["seconds"] for record in result.losses[WARMUP:]]


def minimal_steps(steps: int) -> list[float]:
    """The plain loop: VAE encode, noise, UNet with a peft LoRA, MSE, backward, clipping, AdamW."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from nbhelpers import loaders
    from nbhelpers.train import data, shipped_data

    pipe = loaders.load_diffusion("tiny", "train_base")
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    unet.train()  # as every diffusers training script does (dropout layers active, even at p=0)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    images = data.load_folder(shipped_data("lora"), 64)
    # The frozen text encoder's outputs are computed once, as the trainer does, so the ratio measures overhead only.
    with torch.no_grad():
        ids = tokenizer(images.prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        all_states = text_encoder(ids)[0]
    times = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer does on a CPU
    try:
        for step in range(steps):
            start = clock()
            chosen = [(2 * step + k) % len(images.images) for k in range(2)]
            pixels = data.to_model_range(torch.stack([images.images[i] for i in chosen]))
            states = all_states[chosen]
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
            pred = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, states).sample
            loss = F.mse_loss(pred.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(clock() - start)
    finally:
        torch.set_num_threads(previous)
    return times[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12, help="steps per round and side, the first 4 not timed")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    ours, plain, ratios = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            timed = {}
            sides = {"trainer": lambda: trainer_steps(args.steps, folder, round_),
                     "minimal": lambda: minimal_steps(args.steps)}
            for name in sides if round_ % 2 == 0 else reversed(sides):
                gc.collect()  # the other side's models are garbage now: collect them here, not during timed steps
                timed[name] = sides[name]()
            ours += timed["trainer"]
            plain += timed["minimal"]
            ratios.append(statistics.median(timed["trainer"]) / statistics.median(timed["minimal"]))
    ratio = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4)
    verdict = "ok" if ratio <= TARGET else "TOO SLOW"
    print(f"tiny LoRA step, batch 2, 64 px, {args.clock} time: trainer {statistics.median(ours) * 1000:.1f} ms, "
          f"minimal diffusers+peft loop {statistics.median(plain) * 1000:.1f} ms (medians of {len(ours)} steps each)")
    print(f"ratio trainer / minimal: {ratio:.3f}, median of {len(ratios)} back-to-back rounds (quartiles "
          f"{quartiles[0]:.3f}-{quartiles[2]:.3f}); target <= {TARGET}: {verdict}")
    if args.json:
        from nbhelpers import persist

        persist.atomic_write_json(args.json, {"trainer_ms": statistics.median(ours) * 1000,
                                              "minimal_ms": statistics.median(plain) * 1000, "ratio": ratio,
                                              "round_ratios": ratios, "clock": args.clock, "target": TARGET})


if __name__ == "__main__":
    main()
