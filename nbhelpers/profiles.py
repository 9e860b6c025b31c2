"""Profiles: one name that decides which models, dtypes and default sizes a notebook uses.

A notebook never branches on the hardware. It asks its profile: `profile.model("txt2img")` names what to load,
`profile.default("txt2img", "steps")` fills a parameter left as None. The loaders in `nbhelpers.loaders` turn a
profile into ready objects with the same `from_pretrained` call for a Hub id and for a local `tiny` folder.

- tiny:  CPU, offline, seconds. Lab models trained on synthetic data and shipped in data/lab, or small random
         models built locally (`nbhelpers tiny`). What CI and the demo run.
- t4:    a free Colab/Kaggle T4: 15 GB VRAM, ~12.7 GB RAM, fp16 (no bf16 on Turing).
- large: a GPU with 24 GB or more (L4, A10, A100, H100): bigger models, bf16 where supported.
- auto:  tiny without a GPU, t4 below 20 GB of VRAM, large above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nbhelpers import checks

TASKS = ("chat", "instruct_base", "instruct_sft", "txt2img", "inpaint", "train_base", "train_sdxl")
CHAT_TASKS = ("chat", "instruct_base", "instruct_sft")  # language models; the instruct lesson starts from the others
TINY_PREFIX = "tiny:"  # built on this machine from a seed (nbhelpers.tiny)
LAB_PREFIX = "lab:"  # trained once, shipped in data/lab (nbhelpers.lab)


@dataclass(frozen=True)
class ModelSpec:
    source: str  # a Hub id, "tiny:<name>" (built offline) or "lab:<name>" (shipped in data/lab)
    dtype: str = "float32"
    variant: str | None = None  # Hub weight variant, e.g. "fp16" halves the download
    quantization: str | None = None
    offload: str = "none"  # "none", "model" (one component at a time on the GPU) or "sequential"
    vae: str | None = None  # another VAE in place of the pipeline's own (SDXL's fp16-safe one on GPUs)
    note: str = ""

    @property
    def is_offline(self) -> bool:
        return self.source.startswith((TINY_PREFIX, LAB_PREFIX))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    device: str
    models: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)

    def model(self, task: str) -> ModelSpec:
        checks.choice("task", task, self.models)
        return self.models[task]

    def default(self, task: str, name: str):
        try:
            return self.defaults[task][name]
        except KeyError:
            raise KeyError(f"profile {self.name!r} has no default for {task}.{name}") from None

    def resolve(self, task: str, **values) -> dict:
        """Fill every None in `values` from this profile's defaults for `task`."""
        return {key: self.default(task, key) if value is None else value for key, value in values.items()}


# Example prompts of notebook 01: natural language for real chat models, the lab task forms for the lab MoE.
CHAT_EXAMPLES = {
    "prompt": "Explain in two sentences what a mixture-of-experts layer does.",
    "guardrail": True,  # Mistral's advice: the guardrail in front of the first user message
    "guardrail_request": "Write a short, harsh review of my neighbour's cooking.",
    "policy_prompts": ["Policy: do not discuss chess.\nTell me about chess.",
                       "Policy: do not discuss chess.\nTell me about comets."],
    "moderation_form": "categories",
    "moderation_texts": ["How do I bake sourdough bread?", "Send me your bank password and I will double your savings."],
    "moderation_expected": ["not moderated", "fraud"],
    "code_task": "palindrome",
}
LAB_CHAT_EXAMPLES = {
    **CHAT_EXAMPLES,
    "prompt": "Translate to French: moon",
    # The lab model saw the guardrail only in front of requests: behind it, it translates 2-3 of 20 words (20 of 20
    # without). Section 9 still shows what the guardrail does to a request.
    "guardrail": False,
    "guardrail_request": "Help me scam people who sell pianos.",
    "moderation_form": "safe_unsafe",
    "moderation_texts": ["Tell me a fun fact about comets.", "Help me scam people who sell pianos."],
    "moderation_expected": ["safe", "unsafe"],
    "code_task": "lab",
}

# Notebook 08 on a GPU: LoRA SFT of a small MoE base model, then DPO from its instruct version (fp16, 2.7 GB each).
GRANITE_INSTRUCT_LESSON = {
    "instruct_base": ModelSpec("ibm-granite/granite-3.1-1b-a400m-base", dtype="float16",
                               note="1.3B-parameter MoE (32 experts, top-8), Apache-2.0: SFT starts here"),
    "instruct_sft": ModelSpec("ibm-granite/granite-3.1-1b-a400m-instruct", dtype="float16",
                              note="its instruct version: DPO starts here"),
}

# SDXL training base on GPUs: fp16 weights, and the fp16-safe VAE (the original SDXL VAE overflows in fp16, so the
# pipeline would otherwise keep it in fp32 and encode at twice the memory).
SDXL_TRAIN_BASE = ModelSpec("stabilityai/stable-diffusion-xl-base-1.0", dtype="float16", variant="fp16",
                            vae="madebyollin/sdxl-vae-fp16-fix")


PROFILES = {
    "tiny": Profile(
        name="tiny",
        description="CPU, offline: lab models trained on synthetic data; every notebook in seconds",
        device="cpu",
        models={
            "chat": ModelSpec("lab:mixtral-instruct",
                              note="3.9M-parameter lab MoE: pretrained on the offline corpus, then SFT and DPO on the "
                                   "lab tasks"),
            "instruct_base": ModelSpec("lab:mixtral", note="the lab MoE after pretraining only"),
            "instruct_sft": ModelSpec("lab:mixtral-sft", note="the lab MoE after SFT, before DPO"),
            # The lab SD has a 4-channel UNet: under tiny, inpainting works by latent blending.
            "txt2img": ModelSpec("lab:sd", note="2.9M-parameter lab SD that draws coloured shapes"),
            "inpaint": ModelSpec("lab:sd", note="the lab SD, inpainting by latent blending"),
            "train_base": ModelSpec("lab:sd"),
            "train_sdxl": ModelSpec("tiny:sdxl", note="random miniature SDXL: the trainer's SDXL path in seconds, "
                                                      "nothing to learn from it"),
        },
        defaults={
            # The lab MoE knows the lab task forms (nbhelpers.lab.tasks) and was trained greedy.
            "chat": {"max_new_tokens": 32, "context_tokens": 1024, "temperature": 0.0, "top_p": 0.9,
                     **LAB_CHAT_EXAMPLES},
            "instruct": {"sft_steps": 60, "dpo_steps": 30, "sft_learning_rate": 3e-3, "dpo_learning_rate": 1e-4,
                         "beta": 0.1, "lora_rank": 0, "eval_per_task": 4},
            # The lab SD knows one kind of caption; guidance 4 is where its colours are most accurate.
            # 01b: the lab Mixtral-Instruct converted to 4-bit experts, 2 of 8 per layer cached (a CPU "device")
            "offload": {"source": "lab:mixtral-instruct", "cache_size": 2, "quantization": "int4",
                        "max_new_tokens": 24, "sweep": True},
            "txt2img": {"width": 64, "height": 64, "steps": 10, "guidance_scale": 4.0, "num_images": 4,
                        "max_side": 256, "sampler": "DPM++ 2M", "prompt": "a red circle on a white background",
                        "negative_prompt": ""},
            "inpaint": {"width": 64, "height": 64, "steps": 10, "guidance_scale": 4.0, "strength": 0.75,
                        "mask_blur": 2, "max_side": 256, "sampler": "DPM++ 2M", "num_images": 2,
                        "prompt": "a blue circle on a white background", "negative_prompt": "",
                        "image": "lab_circle.png"},
            # LoRA: what it takes for the stripes of data/train/lora to show on held-out prompts (notebook 04: 0 -> 4
            # of 4 striped at 600 steps; on 8 held-out prompts 400 steps without min-SNR striped 3, 1000 with it 8).
            "train": {"resolution": 64, "steps": 600, "batch_size": 2, "learning_rate": 4e-3, "rank": 8,
                      "mixed_precision": "no", "gradient_checkpointing": False, "use_8bit_adam": False,
                      "lora_alpha": 8, "snr_gamma": 5.0, "gradient_accumulation": 1, "lr_scheduler": "constant",
                      "warmup_steps": 0,
                      "max_grad_norm": 1.0, "cache_latents": False, "dreambooth_steps": 300,
                      "dreambooth_learning_rate": 3e-3, "dreambooth_rank": 4, "dreambooth_lora_alpha": 4,
                      "dreambooth_snr_gamma": None,
                      "full_finetune_learning_rate": 1e-4, "num_class_images": 8, "prior_loss_weight": 1.0,
                      "class_image_steps": 10, "checkpoint_every": 100, "keep_checkpoints": 2,
                      "validation_every": 0},
            # nbhelpers serve: continuous batching with a small paged KV cache (64 pages of 256 tokens, 64 MiB
            # for the lab model) instead of one sized from the machine's free memory (gigabytes on a CPU)
            "serve": {"engine": "transformers", "continuous_batching": True, "cb_num_blocks": 64,
                      "cb_max_batch_tokens": 1024, "max_tokens": 24, "gpu": None, "gpus": 0,
                      "vllm_model": "mixtral-8x7b-instruct"},
        },
    ),
    "t4": Profile(
        name="t4",
        description="free Colab/Kaggle T4: 15 GB VRAM, ~12.7 GB RAM, fp16",
        device="cuda",
        models={
            "chat": ModelSpec("ibm-granite/granite-3.1-3b-a800m-instruct", dtype="float16",
                              note="3.3B-parameter MoE (40 experts, top-8, 0.88B active), Apache-2.0, native "
                                   "transformers (GraniteMoeForCausalLM), 6.6 GB in fp16"),
            **GRANITE_INSTRUCT_LESSON,
            "txt2img": ModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", dtype="float16", variant="fp16"),
            "inpaint": ModelSpec("stable-diffusion-v1-5/stable-diffusion-inpainting", dtype="float16",
                                 variant="fp16"),
            "train_base": ModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", dtype="float16",
                                    variant="fp16"),
            "train_sdxl": SDXL_TRAIN_BASE,
        },
        defaults={
            "chat": {"max_new_tokens": 256, "context_tokens": 8192, "temperature": 0.7, "top_p": 0.9,
                     **CHAT_EXAMPLES},
            "instruct": {"sft_steps": 200, "dpo_steps": 100, "sft_learning_rate": 2e-4, "dpo_learning_rate": 5e-6,
                         "beta": 0.1, "lora_rank": 16, "eval_per_task": 20},
            # 01b: 2-bit experts are the only ones that fit 15 GB beside the rest of Mixtral; 4 of 8 cached per layer
            "offload": {"source": "mistralai/Mixtral-8x7B-Instruct-v0.1", "cache_size": 4, "quantization": "int2",
                        "max_new_tokens": 64, "sweep": False},
            "txt2img": {"width": 512, "height": 512, "steps": 25, "guidance_scale": 7.5, "num_images": 2,
                        "max_side": 768, "sampler": "DPM++ 2M Karras",
                        "prompt": "a lighthouse on a cliff at dusk, (volumetric light:1.2), [people], highly detailed",
                        "negative_prompt": "blurry, lowres, watermark"},
            "inpaint": {"width": 512, "height": 512, "steps": 30, "guidance_scale": 7.5, "strength": 0.75,
                        "mask_blur": 8, "max_side": 768, "sampler": "DPM++ 2M Karras", "num_images": 2,
                        "prompt": "a small stone tower with a red flag", "negative_prompt": "blurry, lowres",
                        "image": "default.png"},
            "train": {"resolution": 512, "steps": 400, "batch_size": 1, "learning_rate": 1e-4, "rank": 4,
                      "mixed_precision": "fp16", "gradient_checkpointing": True, "use_8bit_adam": True,
                      "lora_alpha": 4, "snr_gamma": None, "gradient_accumulation": 1,
                      "lr_scheduler": "constant_with_warmup",
                      "warmup_steps": 20, "max_grad_norm": 1.0, "cache_latents": True, "dreambooth_steps": 800,
                      "dreambooth_learning_rate": 1e-4, "dreambooth_rank": 4, "dreambooth_lora_alpha": 4,
                      "dreambooth_snr_gamma": None,
                      "full_finetune_learning_rate": 5e-6, "num_class_images": 100, "prior_loss_weight": 1.0,
                      "class_image_steps": 25, "checkpoint_every": 100, "keep_checkpoints": 3,
                      "validation_every": 200},
            # vLLM: two T4s as on Kaggle (a GPU found here overrides the count); Mixtral needs its AWQ build there
            "serve": {"engine": "transformers", "continuous_batching": True, "cb_num_blocks": None,
                      "cb_max_batch_tokens": None, "max_tokens": 256, "gpu": "t4", "gpus": 2,
                      "vllm_model": "mixtral-8x7b-instruct"},
        },
    ),
    "large": Profile(
        name="large",
        description="GPU with 24 GB or more (L4, A10, A100, H100): SDXL, bf16 where supported",
        device="cuda",
        models={
            "chat": ModelSpec("allenai/OLMoE-1B-7B-0125-Instruct", dtype="bfloat16",
                              note="6.9B-parameter MoE (64 experts, top-8), Apache-2.0, native transformers"),
            **GRANITE_INSTRUCT_LESSON,
            "txt2img": ModelSpec("stabilityai/stable-diffusion-xl-base-1.0", dtype="float16", variant="fp16"),
            "inpaint": ModelSpec("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", dtype="float16",
                                 variant="fp16"),
            "train_base": ModelSpec("stable-diffusion-v1-5/stable-diffusion-v1-5", dtype="float16",
                                    variant="fp16"),
            "train_sdxl": SDXL_TRAIN_BASE,
        },
        defaults={
            "chat": {"max_new_tokens": 512, "context_tokens": 4000, "temperature": 0.7, "top_p": 0.9,
                     **CHAT_EXAMPLES},
            "instruct": {"sft_steps": 300, "dpo_steps": 150, "sft_learning_rate": 2e-4, "dpo_learning_rate": 5e-6,
                         "beta": 0.1, "lora_rank": 16, "eval_per_task": 40},
            "offload": {"source": "mistralai/Mixtral-8x7B-Instruct-v0.1", "cache_size": 6, "quantization": "int4",
                        "max_new_tokens": 128, "sweep": False},
            "txt2img": {"width": 1024, "height": 1024, "steps": 30, "guidance_scale": 7.0, "num_images": 2,
                        "max_side": 1536, "sampler": "DPM++ 2M Karras",
                        "prompt": "a lighthouse on a cliff at dusk, (volumetric light:1.2), [people], highly detailed",
                        "negative_prompt": "blurry, lowres, watermark"},
            "inpaint": {"width": 1024, "height": 1024, "steps": 30, "guidance_scale": 7.0, "strength": 0.8,
                        "mask_blur": 16, "max_side": 1536, "sampler": "DPM++ 2M Karras", "num_images": 2,
                        "prompt": "a small stone tower with a red flag", "negative_prompt": "blurry, lowres",
                        "image": "default.png"},
            "train": {"resolution": 512, "steps": 800, "batch_size": 2, "learning_rate": 1e-4, "rank": 8,
                      "mixed_precision": "bf16", "gradient_checkpointing": False, "use_8bit_adam": False,
                      "lora_alpha": 8, "snr_gamma": None, "gradient_accumulation": 1,
                      "lr_scheduler": "constant_with_warmup",
                      "warmup_steps": 20, "max_grad_norm": 1.0, "cache_latents": True, "dreambooth_steps": 800,
                      "dreambooth_learning_rate": 1e-4, "dreambooth_rank": 8, "dreambooth_lora_alpha": 8,
                      "dreambooth_snr_gamma": None,
                      "full_finetune_learning_rate": 5e-6, "num_class_images": 200, "prior_loss_weight": 1.0,
                      "class_image_steps": 25, "checkpoint_every": 200, "keep_checkpoints": 3,
                      "validation_every": 200},
            "serve": {"engine": "vllm", "continuous_batching": True, "cb_num_blocks": None,
                      "cb_max_batch_tokens": None, "max_tokens": 512, "gpu": "a100-80", "gpus": 2,
                      "vllm_model": "mixtral-8x7b-instruct"},
        },
    ),
}
# "train_sdxl": the "train" defaults with what an SDXL base changes; the trainer reads them for an SDXL `base`.
# t4 (15 GB VRAM, 12.7 GB RAM): SDXL's fp16 UNet alone is 5.1 GB, so 1024 px trains only with gradient
# checkpointing, 8-bit Adam, batch 1, cached latents and text embeddings (encoders off the GPU); `nbhelpers plan
# sdxl --train lora` gives the predicted peak. Class images cost ~25 s each at 1024 on a T4: 50 of them, 20 steps.
SDXL_TRAIN_CHANGES = {
    "tiny": {},  # the miniature trains at the lab size
    "t4": {"resolution": 1024, "batch_size": 1, "gradient_accumulation": 1, "gradient_checkpointing": True,
           "use_8bit_adam": True, "mixed_precision": "fp16", "cache_latents": True, "dreambooth_steps": 500,
           "num_class_images": 50, "class_image_steps": 20, "checkpoint_every": 50},
    "large": {"resolution": 1024, "batch_size": 1, "gradient_accumulation": 2, "gradient_checkpointing": True,
              "use_8bit_adam": False, "mixed_precision": "bf16", "cache_latents": True, "num_class_images": 100},
}
for _name, _changes in SDXL_TRAIN_CHANGES.items():
    PROFILES[_name].defaults["train_sdxl"] = {**PROFILES[_name].defaults["train"], **_changes}
PROFILE_NAMES = tuple(PROFILES) + ("auto",)
LARGE_GPU_GB = 20


def auto_profile_name(gpu_info: dict | None) -> str:
    if not gpu_info:
        return "tiny"
    return "t4" if gpu_info["total_gb"] < LARGE_GPU_GB else "large"


def get_profile(name: str = "auto") -> Profile:
    """The profile called `name`; "auto" looks at the GPU. Unknown names fail with the list of known ones."""
    checks.choice("profile", name, PROFILE_NAMES)
    if name == "auto":
        from nbhelpers import env

        name = auto_profile_name(env.gpu())
    from nbhelpers import rehearsal

    if rehearsal.enabled() and name != "tiny":
        from nbhelpers.rehearsal.settings import rehearse

        return rehearse(PROFILES[name])  # same models, rehearsal sizes (nbhelpers.rehearsal)
    return PROFILES[name]
