"""The T4 figures in one command: run it once on a lent GPU, capped at a T4's 15 GB, with random weights of the real
architectures (nothing is downloaded), and it writes gpu_suite.json and gpu_suite.md.

    python benchmarks/gpu_suite.py --out outputs/gpu_suite            # on a GPU: about 5-8 minutes
    python benchmarks/gpu_suite.py --device cpu --smoke --out DIR      # toy sizes on a CPU: what CI runs

Sections (each guarded: one that fails is written with its error and the others still run):
- sd15_txt2img: SD 1.5 txt2img with the t4 profile's settings (512 px, fp16, its sampler and steps) through the
  notebooks' own `diffusion.Engine` and loader: it/s (UNet calls per second), s/image, peak GPU memory;
- sd15_inpaint: the same for the 9-channel SD 1.5 inpainting model (`Engine.inpaint`, the t4 settings);
- sd15_lora_step / sd15_dreambooth_lora_step: `nbhelpers.train` with the t4 defaults (512 px, fp16 mixed precision,
  gradient checkpointing, 8-bit Adam, cached latents; DreamBooth with prior preservation): s/step, peak;
- sdxl_txt2img: SDXL at 1024 px in the setting `nbhelpers plan sdxl --gpu t4` picks, with t4's sampler and steps;
- mixtral_offload: `nbhelpers.moe.offload` (int2 HQQ experts, 4 cached per layer, prefetch) on Mixtral-8x7B layers
  of real width (4 of 32), against accelerate's offloading of the same model (benchmarks/bench_offload.py):
  tokens/s and bytes moved per token, also extrapolated to 32 layers (x 4/32 and x 32/4).

On a GPU the SD 1.5 models come from NBHELPERS_RANDOM_WEIGHTS checkpoints (`nbhelpers.rehearsal`, built once from
data/configs into the nbhelpers cache, ~8 GB of disk), SDXL from `nbhelpers.bench.models` ("random:sdxl", built in
memory), Mixtral from bench_offload's random Mixtral-shaped layers. Peak memory is
`torch.cuda.max_memory_allocated` since the section started (weights included); on a CPU the peak RSS (VmHWM).
Random weights make pictures noise and generated text meaningless: speed and memory only.

On the lent machine: its image has torch, transformers, accelerate and peft but not diffusers, hqq, bitsandbytes:
`benchmarks/gpu_suite_wheels.sh` (here, with pip) puts the wheels into .whl, and the command in its header installs
them there before this script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

SECTIONS = ("sd15_txt2img", "sd15_inpaint", "sd15_lora_step", "sd15_dreambooth_lora_step", "sdxl_txt2img",
            "mixtral_offload")
GIB = 2**30
T4_CAP_GB = 15.0
NOTE = "RANDOM weights of the real architectures: speed and memory only; pictures and text are noise"


class Suite:
    def __init__(self, device: str, smoke: bool, out: Path):
        self.device, self.smoke, self.out = device, smoke, out
        self.profile = "tiny" if smoke else "t4"

    # -- measuring -------------------------------------------------------------------------------------------
    def reset_peak(self) -> int:
        """Start a peak-memory window; returns the bytes in use now."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        from nbhelpers.plan import measure

        return measure.reset_peak()

    def peak(self) -> int:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        from nbhelpers.plan import measure

        return measure.peak()

    def in_use(self) -> int:
        import torch

        if self.device == "cuda":
            return torch.cuda.memory_allocated()
        from nbhelpers.plan import measure

        return measure.status_bytes("VmRSS")

    def t4_default(self, task: str, name: str):
        """The t4 profile's own value (not the rehearsal's shrunken one) on a GPU; toy sizes in smoke mode."""
        from nbhelpers.profiles import PROFILES

        toy = {("txt2img", "width"): 64, ("txt2img", "height"): 64, ("txt2img", "steps"): 3,
               ("inpaint", "width"): 64, ("inpaint", "height"): 64, ("inpaint", "steps"): 4,
               ("train", "resolution"): 64}
        if self.smoke and (task, name) in toy:
            return toy[task, name]
        return PROFILES[self.profile].default(task, name)

    def sync(self):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    # -- sections --------------------------------------------------------------------------------------------
    def sd15_txt2img(self) -> dict:
        from nbhelpers.diffusion import Engine

        engine = Engine(self.profile, say=print)
        start = self.reset_peak()
        engine.pipeline("txt2img")  # the notebooks' loader: fp16 on a GPU, random weights from data/configs
        weights = self.in_use() - start
        settings = {key: self.t4_default("txt2img", key) for key in ("width", "height", "steps", "guidance_scale",
                                                                     "sampler", "prompt", "negative_prompt")}
        return self._generate(engine, "txt2img", settings, weights)

    def sd15_inpaint(self) -> dict:
        from PIL import Image

        from nbhelpers.diffusion import Engine
        from nbhelpers.diffusion.generate import default_image_path, fit

        engine = Engine(self.profile, say=print)
        start = self.reset_peak()
        engine.pipeline("inpaint")  # the 9-channel model (the lab SD's 4-channel one in smoke mode)
        weights = self.in_use() - start
        side = self.t4_default("inpaint", "width")
        image = fit(Image.open(default_image_path(self.profile)).convert("RGB"), side)
        mask = Image.new("L", image.size, 0)
        mask.paste(255, (image.width // 4, image.height // 4, 3 * image.width // 4, 3 * image.height // 4))
        settings = {key: self.t4_default("inpaint", key) for key in ("steps", "guidance_scale", "sampler", "prompt",
                                                                     "negative_prompt", "strength", "mask_blur")}
        settings.update(image=image, mask=mask)
        return self._generate(engine, "inpaint", settings, weights)

    def _generate(self, engine, kind: str, settings: dict, weights: int) -> dict:
        call = engine.txt2img if kind == "txt2img" else engine.inpaint
        unet = engine.pipeline(kind).unet
        args = dict(settings)
        image, mask = args.pop("image", None), args.pop("mask", None)
        positional = (args.pop("prompt"),) if image is None else (image, mask, args.pop("prompt"))
        warm = dict(args, steps=2) if kind == "txt2img" else dict(args, steps=2, strength=1.0)
        call(*positional, **warm, num_images=1)  # first call: kernel choices and allocations, not counted
        clock = UNetClock(unet, self.sync)
        before = self.reset_peak()
        started = time.perf_counter()
        with clock:
            result = call(*positional, **args, num_images=1)
        self.sync()
        seconds = time.perf_counter() - started
        result.save(self.out / "images", f"{kind}-noise")  # noise (random weights); the PNG's parameters say so in a rehearsal
        return {"setting": f"{result.settings['width']}x{result.settings['height']}, {settings['steps']} steps "
                           f"{settings['sampler']}, guidance {settings['guidance_scale']}, batch 1",
                "figures": {"it_per_s": clock.rate(), "s_per_image": round(seconds, 3),
                            "unet_calls": len(clock.times), "weights_gib": round(weights / GIB, 3),
                            "peak_gib": round(self.peak() / GIB, 3),
                            "peak_rise_gib": round((self.peak() - before) / GIB, 3)}}

    def sd15_lora_step(self) -> dict:
        from nbhelpers.train import TrainConfig, shipped_data

        return self._train(TrainConfig(mode="lora", data=str(shipped_data("lora")), profile=self.profile))

    def sd15_dreambooth_lora_step(self) -> dict:
        from nbhelpers.train import TrainConfig, shipped_data

        # Prior preservation on (the t4 default has class images): 4 class images instead of 100 keep the
        # generation short; a step's batch holds an instance and a class image either way.
        return self._train(TrainConfig(mode="dreambooth", data=str(shipped_data("dreambooth")), profile=self.profile,
                                       instance_prompt="a photo of sks toy", class_prompt="a photo of a toy",
                                       num_class_images=2 if self.smoke else 4,
                                       class_image_steps=1 if self.smoke else self.t4_default("train",
                                                                                              "class_image_steps")))

    def _train(self, config) -> dict:
        import dataclasses
        import statistics

        from nbhelpers.train import train

        steps = 3 if self.smoke else 12
        # Checkpoints and class images go to a scratch folder: only the report and three pictures come back from a
        # lent machine (its tool returns a handful of files).
        scratch = tempfile.mkdtemp(prefix=f"gpu_suite-{config.mode}-")
        config = dataclasses.replace(config, output=str(Path(scratch) / "run"), steps=steps, warmup_steps=1,
                                     resolution=self.t4_default("train", "resolution"), checkpoint_every=10**6,
                                     validation_every=0, progress=False)
        self.reset_peak()
        try:
            result = train(config)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        used = result.config
        adam = "8-bit Adam" if used.use_8bit_adam else "AdamW"
        if used.use_8bit_adam and not (self.device == "cuda" and _importable("bitsandbytes")):
            adam = "torch AdamW (8-bit Adam asked, bitsandbytes missing or no GPU; a LoRA's state is small)"
        times = [record["seconds"] for record in result.losses]
        timed = times[2:] if len(times) > 3 else times[1:]  # the first steps allocate and pick kernels
        prior = f", prior preservation ({used.num_class_images} class images)" if used.prior_preservation else ""
        return {"setting": f"{used.resolution} px, batch {used.batch_size}, rank {used.rank}, mixed precision "
                           f"{used.mixed_precision}, gradient checkpointing {used.gradient_checkpointing}, {adam}, "
                           f"cached latents {used.cache_latents}{prior}",
                "figures": {"s_per_step": round(statistics.median(timed), 4), "steps": len(times),
                            "peak_gib": round(self.peak() / GIB, 3), "run_s": round(result.seconds, 1),
                            "final_loss": round(result.losses[-1]["loss"], 4)}}

    def sdxl_txt2img(self) -> dict:
        from nbhelpers.diffusion import Engine

        start = self.reset_peak()
        if self.smoke:
            pipe, setting = toy_sdxl().to(self.device), "toy SDXL (2 levels, 32/64 channels)"
            sizes = {"width": 64, "height": 64, "steps": 3}
        else:
            pipe, setting = planned_sdxl(self.device)
            sizes = {"width": 1024, "height": 1024, "steps": self.t4_default("txt2img", "steps")}
        weights = self.in_use() - start
        # The t4 profile's sampler, steps and guidance; `large` only for its size limit (t4 caps sides at 768).
        engine = Engine("tiny" if self.smoke else "large", pipe=pipe, say=print)
        settings = {**sizes, **{key: self.t4_default("txt2img", key)
                                for key in ("guidance_scale", "sampler", "prompt", "negative_prompt")}}
        row = self._generate(engine, "txt2img", settings, weights)
        row["setting"] = f"{setting}; {row['setting']}"
        return row

    def mixtral_offload(self) -> dict:
        import copy

        import torch

        import bench_offload

        layers = None if self.smoke else 4
        tokens = 4 if self.smoke else 12
        torch.manual_seed(0)
        base = bench_offload.build_model(self.device, layers)
        prompt = torch.randint(3, base.config.vocab_size, (1, 16)).to(self.device)
        baseline = copy.deepcopy(base)
        self.reset_peak()
        accelerate = bench_offload.run_accelerate(baseline, self.device, prompt, tokens)
        accelerate_peak = self.peak()
        del baseline
        self.reset_peak()
        engine = bench_offload.run_engine(base, self.device, prompt, tokens, cache_size=4, quantization="int2",
                                          prefetch=True)
        engine_peak = self.peak()
        same = accelerate.pop("output") == engine.pop("output")
        count = base.config.num_hidden_layers
        scale = 32 / count  # decoding time and bytes moved grow with the layer count (embeddings are small)

        def per_32(rate):
            return round(rate / scale, 3) if rate else None

        return {"setting": f"{count} Mixtral-8x7B layers of real width (hidden {base.config.hidden_size})"
                           if layers else f"small Mixtral ({count} layers, hidden {base.config.hidden_size})",
                "figures": {"engine_tokens_per_s": engine["tokens_per_s"],
                            "accelerate_tokens_per_s": accelerate["tokens_per_s"],
                            "engine_tokens_per_s_32_layers": per_32(engine["tokens_per_s"]),
                            "accelerate_tokens_per_s_32_layers": per_32(accelerate["tokens_per_s"]),
                            "engine_bytes_per_token": round(engine["bytes_per_token"]),
                            "accelerate_bytes_per_token": round(accelerate["bytes_per_token"]),
                            "engine_gb_per_token_32_layers": round(engine["bytes_per_token"] * scale / 1e9, 3),
                            "accelerate_gb_per_token_32_layers": round(accelerate["bytes_per_token"] * scale / 1e9, 3),
                            "hit_rate": engine["hit_rate"], "engine_peak_gib": round(engine_peak / GIB, 3),
                            "accelerate_peak_gib": round(accelerate_peak / GIB, 3),
                            "same_tokens": int(same), "decode_tokens": tokens - 1}}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class UNetClock:
    """Times of the denoiser's forward calls (one per step: classifier-free guidance runs as one batch)."""

    def __init__(self, unet, sync):
        self.unet, self.sync, self.times, self.hook = unet, sync, [], None

    def __enter__(self):
        def record(module, args, output):
            self.sync()
            self.times.append(time.perf_counter())

        self.hook = self.unet.register_forward_hook(record)
        return self

    def __exit__(self, *exc):
        self.hook.remove()

    def rate(self):
        if len(self.times) < 2:
            return None
        return round((len(self.times) - 1) / (self.times[-1] - self.times[0]), 3)


def planned_sdxl(device: str):
    """SDXL's real architecture with random weights, in fp16, in the setting the planner picks for a T4."""
    from nbhelpers.bench import models
    from nbhelpers.plan import plan

    chosen = next(s for s in plan("sdxl", "t4")["settings"] if s["fits"])
    if chosen["quantization"]:
        raise RuntimeError(f"the planner's T4 setting for SDXL quantizes ({chosen['quantization']}): not measured here")
    pipe = models.load("random:sdxl", "cpu" if chosen["offload"] != "none" else device, "fp16")
    return models.apply_memory_setting(pipe, chosen), f"planner's T4 setting: {chosen['setting']}"


def toy_sdxl():
    """A miniature SDXL (both text encoders, pooled vector, size conditioning) for the CPU smoke run."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nbhelpers import tiny

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, cross_attention_dim=64,
        norm_num_groups=16)
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1, sample_size=64)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    tokenizer = tiny.clip_tokenizer()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(config), tokenizer=tokenizer,
                                     text_encoder_2=CLIPTextModelWithProjection(config), tokenizer_2=tokenizer,
                                     unet=unet, scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def markdown(report: dict) -> str:
    head = (f"# GPU suite: {report['device_name']}"
            + (f", capped at {report['memory_cap_gb']} GB" if report["memory_cap_gb"] else "")
            + (" (SMOKE: toy sizes on the CPU, not T4 figures)" if report["smoke"] else "") + "\n\n"
            f"{NOTE}. Total {report['seconds']:.0f} s; torch {report['torch']}.\n\n"
            "| section | status | setting | figures | s |\n|---|---|---|---|---|\n")
    rows = []
    for name, row in report["sections"].items():
        figures = ", ".join(f"{key} {value}" for key, value in row.get("figures", {}).items())
        rows.append(f"| {name} | {row['status']} | {row.get('setting', '')} | "
                    f"{figures or row.get('error', '')} | {row['seconds']:.1f} |")
    return head + "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (the tiny profile's models) on the CPU")
    parser.add_argument("--out", default="outputs/gpu_suite", help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--memory-cap-gb", type=float, default=T4_CAP_GB,
                        help="torch.cuda.set_per_process_memory_fraction to this many GB (a T4's 15)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    if args.device == "cpu" and not args.smoke:
        parser.error("--device cpu needs --smoke (the real sizes are for a GPU; the CPU rehearsal is .ci/rehearsal)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here (use --device cpu --smoke to check the script)")
    if args.device == "cuda":
        from nbhelpers import rehearsal

        os.environ[rehearsal.ENV] = "1"  # the loaders build random-weight checkpoints instead of downloading
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gb * 1e9 / total))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(args.device, args.smoke, out)
    report = {"device": args.device,
              "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU",
              "memory_cap_gb": args.memory_cap_gb if args.device == "cuda" else None, "smoke": args.smoke,
              "random_weights": True, "note": NOTE, "torch": torch.__version__, "sections": {}}
    began = time.perf_counter()
    for number, name in enumerate(sections, 1):
        print(f"[{number}/{len(sections)}] {name} ... ({time.perf_counter() - began:.0f} s so far)", flush=True)
        started = time.perf_counter()
        try:
            row = {"status": "ok", **getattr(suite, name)()}
        except Exception as error:  # one broken section must not lose the others' figures
            traceback.print_exc()
            row = {"status": "error", "error": f"{type(error).__name__}: {error}"[:500]}
        row["seconds"] = round(time.perf_counter() - started, 1)
        report["sections"][name] = row
        print(f"[{number}/{len(sections)}] {name}: {row['status']} in {row['seconds']} s "
              f"{json.dumps(row.get('figures', row.get('error')))}", flush=True)
        _release(args.device)
        report["seconds"] = round(time.perf_counter() - began, 1)
        _write(report, out)  # after every section: a run stopped half-way keeps what it measured
    print(markdown(report))
    print(f"written: {out / 'gpu_suite.json'}, {out / 'gpu_suite.md'}")
    return report


def _release(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _write(report: dict, out: Path) -> None:
    from nbhelpers import persist

    persist.atomic_write_json(out / "gpu_suite.json", report)
    persist.atomic_write_text(out / "gpu_suite.md", markdown(report))


if __name__ == "__main__":
    report = main()
    sys.exit(0 if all(row["status"] == "ok" for row in report["sections"].values()) else 1)
