"""Which shipped config stands for which Hub model in the rehearsal, and what is cut to fit a CPU.

Widths are always the real ones. Depth is cut only where the real model does not fit ~8 GB of CPU RAM in the
rehearsal dtype (a T4 has 15 GB of VRAM, a shared CPU machine less): language models keep 2 layers (Mixtral's
rule in issue 15), SDXL's UNet keeps 1, 1, 2 transformer blocks per level instead of 1, 2, 10 (0.85B of 2.57B
parameters) so that 03's two SDXL pipelines fit together. Every cut is recorded in the folder's rehearsal.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbhelpers import checks

LLM_LAYERS = 2


@dataclass(frozen=True)
class Source:
    config: str  # a data/configs name: "<name>.json" for language models, "<name>/" for diffusers pipelines
    kind: str  # "llm", "pipeline" or "clip" (06's quality judges)
    dtype: str = "float32"  # what the weights are stored and run in on the CPU
    cuts: dict = field(default_factory=dict)  # config fields changed (by component for pipelines)
    pipeline: str = ""  # diffusers pipeline class


_LLM_CUT = {"num_hidden_layers": LLM_LAYERS}
SOURCES = {
    "ibm-granite/granite-3.1-3b-a800m-instruct": Source("granite-3.1-3b-a800m-instruct", "llm", cuts=_LLM_CUT),
    "ibm-granite/granite-3.1-1b-a400m-base": Source("granite-3.1-1b-a400m-base", "llm", cuts=_LLM_CUT),
    "ibm-granite/granite-3.1-1b-a400m-instruct": Source("granite-3.1-1b-a400m-instruct", "llm", cuts=_LLM_CUT),
    "allenai/OLMoE-1B-7B-0125-Instruct": Source("olmoe-1b-7b-0125-instruct", "llm", cuts=_LLM_CUT),
    # bfloat16 as the real checkpoint: 2 real-width layers are 3.1B parameters, 12.5 GB in float32
    "mistralai/Mixtral-8x7B-Instruct-v0.1": Source("mixtral-8x7b", "llm", dtype="bfloat16", cuts=_LLM_CUT),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": Source("sd15", "pipeline", pipeline="StableDiffusionPipeline"),
    "stable-diffusion-v1-5/stable-diffusion-inpainting": Source("sd15-inpainting", "pipeline",
                                                                pipeline="StableDiffusionInpaintPipeline"),
    # bfloat16 (the CPU's 16-bit type; the profile's is float16): SDXL's text encoders alone are 3.3 GB in float32
    "stabilityai/stable-diffusion-xl-base-1.0": Source(
        "sdxl", "pipeline", dtype="bfloat16", pipeline="StableDiffusionXLPipeline",
        cuts={"unet": {"transformer_layers_per_block": [1, 1, 2]}}),
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": Source(
        "sdxl-inpainting", "pipeline", dtype="bfloat16", pipeline="StableDiffusionXLInpaintPipeline",
        cuts={"unet": {"transformer_layers_per_block": [1, 1, 2]}}),
    # 06's quality judges on GPU profiles (nbhelpers.bench.quality): CLIP for FID/KID features, LPIPS layers and
    # CLIP score, PickScore (a CLIP ViT-H-14) for preference; PickScore's processor is the real CLIP one either way
    "openai/clip-vit-base-patch16": Source("judges/clip-vit-base-patch16", "clip"),
    "yuvalkirstain/PickScore_v1": Source("judges/pickscore-v1", "clip"),
}


def source(model_id: str) -> Source:
    """The rehearsal source of a Hub id; a model without a shipped architecture is named."""
    if model_id not in SOURCES:
        raise checks.ParameterError("model", model_id, "a model whose architecture ships in data/configs for the "
                                    "rehearsal: " + ", ".join(SOURCES))
    return SOURCES[model_id]
