"""One loader per model family: profile in, ready object out. Every model from the Hub is loaded here.

Hub ids and the offline `tiny` folders go through the same call; weights are read from safetensors only and
remote code is never trusted. (Folders the project writes itself, such as the lab models' working copies and
converted offload checkpoints, are reopened by the modules that wrote them, also from safetensors only.)
"""

from __future__ import annotations

import contextlib

from nbhelpers import checks, dtypes, persist, rehearsal
from nbhelpers.access import hub_access
from nbhelpers.profiles import CHAT_TASKS, LAB_PREFIX, TINY_PREFIX, ModelSpec, Profile, get_profile


def resolve_source(spec: ModelSpec) -> str:
    """A local folder for `tiny:` models (built on first use) and `lab:` models (shipped), else the Hub id."""
    if spec.source.startswith(TINY_PREFIX):
        from nbhelpers import tiny

        return str(tiny.ensure(spec.source.removeprefix(TINY_PREFIX)))
    if spec.source.startswith(LAB_PREFIX):
        from nbhelpers import safety
        from nbhelpers.paths import data_dir

        folder = data_dir() / "lab" / spec.source.removeprefix(LAB_PREFIX)
        return str(safety.check_weights(folder, parameter="model"))
    if rehearsal.enabled():  # random weights of the real architecture, built from data/configs: no download
        from nbhelpers.rehearsal.checkpoints import folder_for

        return str(folder_for(spec.source))
    return spec.source


@contextlib.contextmanager
def quiet_loading(*libraries):
    """Hide the per-component "Loading ..." bars (downloads keep huggingface_hub's own progress bars)."""
    for library in libraries:
        library.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        for library in libraries:
            library.utils.logging.enable_progress_bar()


def device_for(profile: Profile) -> str:
    import torch

    return "cuda" if profile.device == "cuda" and torch.cuda.is_available() else "cpu"


def load_chat(profile: Profile | str = "auto", task: str = "chat"):
    """(model, tokenizer) of the profile's LLM for `task` ("chat", or the instruct lesson's "instruct_base" and
    "instruct_sft"), in eval mode on the profile's device."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    checks.choice("task", task, CHAT_TASKS)
    persist.configure_model_cache()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = profile.model(task)
    source = resolve_source(spec)
    device = device_for(profile)
    import transformers

    with hub_access(spec.source), quiet_loading(transformers):  # gated or no token: one clear message
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtypes.to_torch(spec.dtype if device == "cuda" else "float32"), use_safetensors=True,
            device_map=device if device == "cuda" else None,
        )
    if device == "cpu" and hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")  # the grouped_mm default is ~10x slower on short CPU batches
    return model.eval(), tokenizer


def load_diffusion(profile: Profile | str = "auto", task: str = "txt2img", spec: ModelSpec | None = None):
    """The profile's pipeline for `task` ("txt2img", "inpaint", "train_base" or "train_sdxl"), on the profile's
    device; `spec` loads another model the same way (the trainer's `base`)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    persist.configure_model_cache()
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    spec = spec or profile.model(task)
    device = device_for(profile)
    pipeline_class = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForText2Image
    source = resolve_source(spec)
    options = {"use_safetensors": True}
    if has_safety_checker(source):
        options.update(safety_checker=None, requires_safety_checker=False)
    if device == "cuda":
        options["torch_dtype"] = dtypes.to_torch(spec.dtype)  # Colab's diffusers 0.39 predates `dtype=`
        if spec.variant and not rehearsal.enabled():  # a rehearsal folder holds one set of weights, no variants
            options["variant"] = spec.variant
    elif not spec.is_offline and rehearsal.enabled():
        options["torch_dtype"] = dtypes.to_torch(rehearsal.cpu_dtype(spec.source))  # SDXL: bfloat16 to fit the RAM
    import diffusers
    import transformers

    with hub_access(spec.source), quiet_loading(diffusers, transformers):
        if spec.vae and device == "cuda" and not rehearsal.enabled():  # the rehearsal keeps the pipeline's own
            options["vae"] = diffusers.AutoencoderKL.from_pretrained(
                resolve_source(ModelSpec(spec.vae)), torch_dtype=options["torch_dtype"], use_safetensors=True)
        pipe = pipeline_class.from_pretrained(source, **options)
    if spec.offload == "model" and device == "cuda":
        pipe.enable_model_cpu_offload()
    elif spec.offload == "sequential" and device == "cuda":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def has_safety_checker(source: str) -> bool:
    """SD 1.x pipelines take a safety checker (turned off here); SDXL's do not and warn about the argument."""
    import json
    from pathlib import Path

    index = Path(source) / "model_index.json"
    if index.is_file():
        return "XL" not in json.loads(index.read_text()).get("_class_name", "")
    return "-xl-" not in source.lower()


def load_hub_pipeline(model_id: str, **options):
    """Any diffusers pipeline by Hub id (the benchmarks' SD3 and FLUX, with the planner's quantization options)."""
    persist.configure_model_cache()
    from diffusers import DiffusionPipeline

    options["use_safetensors"] = True
    with hub_access(model_id):
        return DiffusionPipeline.from_pretrained(model_id, **options)
