"""The pipelines the benchmark can time.

- "tiny": the offline tiny SD pipeline of the tiny profile (real tiny weights, built locally).
- "random:<model>": the real architecture of a shipped config (sd15, sdxl) with RANDOM weights. Speed and memory are
  those of the real model; pictures are noise, so quality figures need real weights. Nothing is downloaded.
- "<model>" (sd15, sdxl, sd3-medium, flux1-schnell): the real weights from the Hub in the setting the planner picks
  for the GPU here. Needs a GPU and a download; never used under the tiny profile.
"""

from __future__ import annotations

from nbhelpers import checks, dtypes
from nbhelpers.plan import configs

RANDOM_PREFIX = "random:"
RANDOM_OK = ("sd15", "sdxl", "tiny-sd")  # DiT pipelines need a T5 tokenizer, which cannot be built offline


def names() -> list[str]:
    return ["tiny"] + [RANDOM_PREFIX + m for m in RANDOM_OK] + list(configs.DIFFUSION)


def with_random_weights(names: list[str]) -> list[str]:
    """`--random-weights`: each Hub model as its random-weight twin ("sdxl" -> "random:sdxl"); nothing downloads."""
    chosen = []
    for name in names:
        if name not in RANDOM_OK:
            check(name)
        if name != "tiny" and not is_random(name):
            if name not in RANDOM_OK:
                raise checks.ParameterError("--random-weights", name, "models whose random-weight architecture can "
                                            "be built offline: " + ", ".join(m for m in RANDOM_OK if m != "tiny-sd")
                                            + " (DiT pipelines need a T5 tokenizer)")
            name = RANDOM_PREFIX + name
        chosen.append(name)
    return chosen


def check(name) -> str:
    return checks.choice("model", name, names())


def is_random(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


def load(name: str, device: str = "cpu", dtype: str = "fp32"):
    """A ready pipeline (progress bar off) for benchmark model `name`."""
    check(name)
    torch_dtype = dtypes.to_torch(dtype)
    if name == "tiny":
        from nbhelpers import loaders

        pipe = loaders.load_diffusion("tiny")
    elif is_random(name):
        pipe = _random_pipeline(name.removeprefix(RANDOM_PREFIX))
    else:
        pipe, offloaded = _hub_pipeline(name, torch_dtype)
        if not offloaded:  # an offloaded pipeline moves its components itself; quantized weights must not be cast
            pipe.to(device)
    if name == "tiny" or is_random(name):
        pipe.to(device, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _random_pipeline(model: str):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from nbhelpers import rehearsal, tiny

    if rehearsal.enabled():  # the rehearsal's own checkpoint (cached, SDXL cut and in bfloat16): fits its RAM
        from nbhelpers import loaders
        from nbhelpers.rehearsal.checkpoints import folder_for

        source = configs.source(model)
        return loaders.load_hub_pipeline(str(folder_for(source)), torch_dtype=dtypes.to_torch(
            rehearsal.cpu_dtype(source)))

    parts = {name: configs.build(lib, cls, configs.component_config(model, name), device="cpu")
             for name, (lib, cls) in configs.component_classes(model).items()}
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    if model == "sdxl":
        return StableDiffusionXLPipeline(tokenizer=tiny.clip_tokenizer(), tokenizer_2=tiny.clip_tokenizer(),
                                         scheduler=scheduler, **parts)
    return StableDiffusionPipeline(tokenizer=tiny.clip_tokenizer(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False, **parts)


def _hub_pipeline(model: str, torch_dtype):
    """(pipeline, whether it offloads to the CPU) with real weights, in the planner's setting for this GPU (GPU only;
    not run under the tiny profile)."""
    import torch

    from nbhelpers import env, loaders, profiles
    from nbhelpers.plan import plan

    if not torch.cuda.is_available():
        raise checks.ParameterError("model", model, "real weights need a GPU; use 'tiny' or 'random:sd15' here")
    gpu = "t4" if profiles.auto_profile_name(env.gpu()) == "t4" else "a100-40"  # the profiles' GPU-size threshold
    verdict = plan(model, gpu)
    chosen = next((s for s in verdict["settings"] if s["fits"]), None)
    if chosen is None:
        raise checks.ParameterError("model", model, f"does not fit a {gpu} in any setting (see `nbhelpers plan`)")
    options = {"torch_dtype": torch_dtype}
    if chosen["quantization"]:
        from diffusers.quantizers import PipelineQuantizationConfig

        backend = {"int8": "bitsandbytes_8bit", "nf4": "bitsandbytes_4bit"}[chosen["quantization"]]
        big = [n for n in configs.component_classes(model) if n in ("unet", "transformer", "text_encoder_2",
                                                                     "text_encoder_3") and
               configs.component_classes(model)[n][1] != "CLIPTextModelWithProjection"]
        options["quantization_config"] = PipelineQuantizationConfig(quant_backend=backend,
                                                                    components_to_quantize=big)
    pipe = apply_memory_setting(loaders.load_hub_pipeline(configs.source(model), **options), chosen)
    return pipe, chosen["offload"] != "none"


def apply_memory_setting(pipe, chosen: dict):
    """`pipe` with the offloading and VAE tiling of one of the planner's settings (`nbhelpers plan`)."""
    if chosen["offload"] == "model":
        pipe.enable_model_cpu_offload()
    elif chosen["offload"] == "sequential":
        pipe.enable_sequential_cpu_offload()
    if chosen["vae_tiling"]:
        pipe.vae.enable_tiling()
    return pipe
