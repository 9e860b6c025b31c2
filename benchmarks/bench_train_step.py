"""Is the trainer's bookkeeping (accelerate, per-example generators, loss records) free? A training step of
`nbhelpers.train` against the shortest diffusers + peft loop that does the same work, on the same tiny model,
batch, resolution, LoRA and thread count. Target: trainer / minimal <= 1.05.

    python benchmarks/bench_train_step.py [--pairs 150] [--clock cpu|wall] [--json out.json]
    python benchmarks/bench_train_step.py --whole-runs [--rounds 20] [--steps 12]

Default (steps): one process builds one run with the trainer's own code (`loop.start_run`: accelerate, the data
stream, the prepared optimizer), then alternates single steps of `loop.train_step` (with the next batch from the
trainer's data loader) and of the minimal loop, which uses the very same UNet-with-LoRA, VAE and text encoder and
its own AdamW. Same model, same memory, same moment: what differs is only the code around the maths. The order
within each pair alternates; the ratio is trainer median / minimal median over all pairs after warm-up.

--whole-runs: each round calls `train(...)` and runs the minimal loop on freshly loaded models, back to back
(order alternating), and the result is the median of the rounds' ratios. This includes whatever a run's set-up does
to the speed of later steps; on a shared 2-core virtual machine single rounds scatter widely (two identical
minimal loops gave round ratios from 0.65 to 1.59), so read it over many rounds.

The clock: by default the process's CPU time (torch runs on one thread in this process, data loading included),
which waiting for a busy host does not inflate; `--clock wall` measures wall time instead.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.05
WARMUP = 4
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def lora_config(output: str, steps: int):
    from nbhelpers.train import TrainConfig, shipped_data

    return TrainConfig(mode="lora", data=str(shipped_data("lora")), output=output, profile="tiny", steps=steps,
                       checkpoint_every=10**6, progress=False)


class MinimalLoop:
    """The plain loop: VAE encode, noise, UNet with a peft LoRA, MSE, backward, clipping, AdamW."""

    def __init__(self, pipe, params, learning_rate: float = 1e-3):
        import torch
        from diffusers import DDPMScheduler

        from nbhelpers.train import data, shipped_data

        self.pipe, self.params = pipe, params
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.images = data.load_folder(shipped_data("lora"), 64)
        tokenizer = pipe.tokenizer
        # The frozen text encoder's outputs are computed once, as the trainer does: the ratio measures overhead only.
        with torch.no_grad():
            ids = tokenizer(self.images.prompts, padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
            self.states = pipe.text_encoder(ids)[0]
        self.position = 0

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        from nbhelpers.train import data

        unet, vae = self.pipe.unet, self.pipe.vae
        chosen = [(self.position + k) % len(self.images.images) for k in range(2)]
        self.position += 2
        pixels = data.to_model_range(torch.stack([self.images.images[i] for i in chosen]))
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (latents.shape[0],))
        pred = unet(self.scheduler.add_noise(latents, noise, timesteps), timesteps, self.states[chosen]).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def interleaved_steps(pairs: int, folder: str) -> tuple[list[float], list[float]]:
    """(trainer step times, minimal step times), alternating single steps on one shared model."""
    from nbhelpers.train import data, loop

    config = lora_config(f"{folder}/steps", pairs + WARMUP).resolved()
    instances = data.load_folder(config.data, config.resolution, use_captions=True)
    ours, plain = [], []
    with loop.deterministic_on_cpu():
        try:
            run = loop.start_run(config, loop.make_accelerator(config), instances)
            minimal = MinimalLoop(run.pipe, run.params, config.learning_rate)
            batches = iter(run.loader)

            def trainer_step():
                loop.train_step(run, next(batches))

            for pair in range(pairs + WARMUP):
                order = [(trainer_step, ours), (minimal.step, plain)]
                for step, times in order if pair % 2 == 0 else reversed(order):
                    start = clock()
                    step()
                    if pair >= WARMUP:
                        times.append(clock() - start)
        finally:
            loop.release_accelerate_state()
    return ours, plain


def whole_run_steps(steps: int, folder: str, round_: int) -> list[float]:
    from nbhelpers.train import loop, train

    loop.STEP_CLOCK = clock
    result = train(lora_config(f"{folder}/trainer-{round_}", steps))
    return [record["seconds"] for record in result.losses[WARMUP:]]


def fresh_minimal_steps(steps: int) -> list[float]:
    """The minimal loop on freshly loaded models, one thread, as a run of its own."""
    import torch
    from peft import LoraConfig

    from nbhelpers import loaders

    pipe = loaders.load_diffusion("tiny", "train_base")
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    pipe.unet.train()  # as every diffusers training script does (dropout layers active, even at p=0)
    minimal = MinimalLoop(pipe, [p for p in pipe.unet.parameters() if p.requires_grad])
    times = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer does on a CPU
    try:
        for _ in range(steps):
            start = clock()
            minimal.step()
            times.append(clock() - start)
    finally:
        torch.set_num_threads(previous)
    return times[WARMUP:]


def whole_runs(rounds: int, steps: int, folder: str) -> tuple[list[float], list[float], list[float]]:
    ours, plain, ratios = [], [], []
    for round_ in range(rounds):
        timed = {}
        sides = {"trainer": lambda: whole_run_steps(steps, folder, round_),
                 "minimal": lambda: fresh_minimal_steps(steps)}
        for name in sides if round_ % 2 == 0 else reversed(sides):
            gc.collect()  # the other side's models are garbage now: collect them here, not during timed steps
            timed[name] = sides[name]()
        ours += timed["trainer"]
        plain += timed["minimal"]
        ratios.append(statistics.median(timed["trainer"]) / statistics.median(timed["minimal"]))
    return ours, plain, ratios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=150, help="steps per side, interleaved (default mode)")
    parser.add_argument("--whole-runs", action="store_true", help="compare whole runs instead (see the docstring)")
    parser.add_argument("--rounds", type=int, default=20, help="--whole-runs: rounds")
    parser.add_argument("--steps", type=int, default=12, help="--whole-runs: steps per round and side")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    with tempfile.TemporaryDirectory() as folder:
        if args.whole_runs:
            ours, plain, ratios = whole_runs(args.rounds, args.steps, folder)
            ratio = statistics.median(ratios)
            how = f"median of {len(ratios)} back-to-back whole-run rounds"
        else:
            ours, plain = interleaved_steps(args.pairs, folder)
            ratios = None
            ratio = statistics.median(ours) / statistics.median(plain)
            how = f"{len(ours)} interleaved steps each on one shared model"
    verdict = "ok" if ratio <= TARGET else "TOO SLOW"
    print(f"tiny LoRA step, batch 2, 64 px, {args.clock} time: trainer {statistics.median(ours) * 1000:.2f} ms, "
          f"minimal diffusers+peft loop {statistics.median(plain) * 1000:.2f} ms")
    print(f"ratio trainer / minimal: {ratio:.3f} ({how}); target <= {TARGET}: {verdict}")
    if args.json:
        from nbhelpers import persist

        persist.atomic_write_json(args.json, {
            "mode": "whole-runs" if args.whole_runs else "steps", "trainer_ms": statistics.median(ours) * 1000,
            "minimal_ms": statistics.median(plain) * 1000, "ratio": ratio, "round_ratios": ratios,
            "steps_per_side": len(ours), "clock": args.clock, "target": TARGET})


if __name__ == "__main__":
    main()
