"""Rehearsal defaults: the profile's own models, with the fewest steps, smallest resolution and shortest
generation that still run every cell. What is left as the profile has it (context limits, dtypes, LoRA ranks,
mixed precision, 8-bit Adam, gradient checkpointing) is exactly what the rehearsal is there to check."""

from __future__ import annotations

import dataclasses

OVERRIDES = {
    # max_new_tokens 4: enough for the streamer, the stop rule and the graders; the needle test keeps its own
    # length check against the model's limit (profile value checked by tests), but runs at 256 tokens here.
    "chat": {"max_new_tokens": 4, "context_tokens": 256},
    # 01b (the profiles' offload defaults): t4 answered 64 tokens through two real-width
    # Mixtral layers on the CPU, most of 01b's rehearsal time; 4 still runs the cache, prefetch and stop rule.
    "offload": {"max_new_tokens": 4},
    "instruct": {"sft_steps": 2, "dpo_steps": 2, "eval_per_task": 1},
    # 09: 4 tokens per reply still streams several chunks and fills the load test. The KV cache gets a fixed size,
    # as under tiny: left as None, transformers sizes it from free memory, which on a CPU is 60% of the machine's
    # RAM (a GPU's VRAM on Colab), not something to allocate on a shared machine.
    "serve": {"max_tokens": 4, "cb_num_blocks": 16, "cb_max_batch_tokens": 512},
    # 64 px (diffusion.checks.MIN_SIDE): an 8x8 latent still passes every UNet level of SD 1.5 and SDXL.
    "txt2img": {"width": 64, "height": 64, "steps": 2, "num_images": 1},
    "inpaint": {"width": 64, "height": 64, "steps": 2, "num_images": 1},
    "train": {"resolution": 64, "steps": 2, "dreambooth_steps": 2, "num_class_images": 1, "class_image_steps": 1,
              "checkpoint_every": 1, "warmup_steps": 1, "validation_every": 0},
}
OVERRIDES["train_sdxl"] = OVERRIDES["train"]


def rehearse(profile):
    """`profile` with the rehearsal defaults (same name, same models)."""
    defaults = {task: {**values, **OVERRIDES.get(task, {})} for task, values in profile.defaults.items()}
    return dataclasses.replace(profile, defaults=defaults,
                               description=profile.description + " [rehearsal: random weights, CPU]")
