"""What a training run is: one dataclass, filled from the profile, checked in full before any model is loaded.

    config = TrainConfig(mode="lora", data="data/train/lora", output="outputs/my-lora", profile="tiny").resolved()
    config = TrainConfig(mode="lora", data="my_images", base="train_sdxl").with_output("outputs/train")

`resolved()` resolves the profile once (a name becomes its Profile object, which then travels with the config: a
notebook passes `run.profile` itself), resolves `base` (bases.py: SD 1.x or SDXL), fills every None from the
profile's "train" defaults (its "train_sdxl" ones for an SDXL base) and raises `ParameterError` for the first bad
value (parameter name and what is allowed). The fingerprint names everything that changes the trained weights:
a resumed run must have the same one, and a different one in the same output folder is "another run".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nbhelpers import checks
from nbhelpers.checks import ParameterError
from nbhelpers.profiles import Profile

MODES = ("lora", "dreambooth")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as in diffusers' LoRA scripts
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# Settings that do not change the trained weights: they may differ between a run and its resumption.
NOT_IN_FINGERPRINT = ("output", "resume", "fresh_if_missing", "checkpoint_every", "keep_checkpoints",
                      "validation_every", "validation_prompts", "class_data", "progress")


@dataclass
class TrainConfig:
    mode: str = "lora"  # "lora": image+caption folder; "dreambooth": instance images + identifier prompt
    data: str = ""
    output: str = ""
    profile: str | Profile = "auto"  # "tiny", "t4", "large", "auto" (picks from the GPU), or a resolved Profile
    base: str | None = None  # the model to train (bases.py); None: the profile's "train_base" (SD 1.5 / lab SD)
    seed: int = 0
    steps: int | None = None  # optimizer steps
    batch_size: int | None = None  # per process; the global batch is batch_size x processes x accumulation
    gradient_accumulation: int | None = None
    learning_rate: float | None = None
    lr_scheduler: str | None = None
    warmup_steps: int | None = None
    max_grad_norm: float | None = None
    resolution: int | None = None
    rank: int | None = None
    lora_alpha: float | None = None  # scale = alpha / rank; alpha = rank means scale 1
    target_modules: tuple = UNET_TARGETS
    train_text_encoder: bool = False  # a LoRA on the CLIP text encoder as well
    full_finetune: bool = False  # DreamBooth only: train every UNet weight instead of a LoRA
    mixed_precision: str | None = None
    gradient_checkpointing: bool | None = None
    use_8bit_adam: bool | None = None
    snr_gamma: float | None = None  # min-SNR weighting (Hang et al. 2023; 5.0 in the paper); None: the profile's
    cache_latents: bool | None = None
    instance_prompt: str | None = None  # LoRA: the caption of images without a .txt; DreamBooth: every image's
    class_prompt: str | None = None  # DreamBooth: turns on prior preservation
    num_class_images: int | None = None
    prior_loss_weight: float | None = None
    class_data: str | None = None  # where class images are cached (default: beside the output folder)
    class_image_steps: int | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = None
    resume: str | None = None  # None, "latest", or a checkpoint folder
    fresh_if_missing: bool = False  # with resume="latest": start fresh when there is no checkpoint yet
    validation_every: int | None = None  # 0 = off
    validation_prompts: tuple = ()
    progress: bool = True
    base_model: object = dataclasses.field(default=None, repr=False, compare=False)  # set by resolved(): a Base
    # A dress rehearsal (NBHELPERS_RANDOM_WEIGHTS, `--random-weights`): the base model has random weights. Set by
    # resolved(), never by hand; part of the fingerprint, so a rehearsal is never resumed or returned as a real run.
    random_weights: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with the profile's defaults filled in and every value checked."""
        from nbhelpers.profiles import get_profile
        from nbhelpers.train import bases

        checks.choice("mode", self.mode, MODES)
        profile = self.profile if isinstance(self.profile, Profile) else get_profile(self.profile)
        base = self.base_model
        if not isinstance(base, bases.Base) or base.name != (self.base or bases.DEFAULT):
            base = bases.resolve(profile, self.base)
        defaults = profile.defaults[base.defaults_task]
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(profile=profile, base=base.name, base_model=base)
        from nbhelpers import rehearsal

        values["random_weights"] = rehearsal.enabled() and profile.name != "tiny"
        for name in defaults:
            if name in values and values[name] is None:
                values[name] = defaults[name]
        if self.mode == "dreambooth" and self.steps is None:
            values["steps"] = defaults["dreambooth_steps"]
        if self.full_finetune and self.learning_rate is None:
            values["learning_rate"] = defaults["full_finetune_learning_rate"]
        elif self.mode == "dreambooth" and self.learning_rate is None:
            values["learning_rate"] = defaults["dreambooth_learning_rate"]
        if self.mode == "dreambooth":  # DreamBooth's own LoRA settings where a profile has them (tiny's LoRA
            for name in ("rank", "lora_alpha", "snr_gamma"):  # defaults are tuned for 04's style, not a subject)
                if getattr(self, name) is None and f"dreambooth_{name}" in defaults:
                    values[name] = defaults[f"dreambooth_{name}"]
        if values["lora_alpha"] is None:
            values["lora_alpha"] = values["rank"]
        if values["mixed_precision"] != "no" and self.mixed_precision is None and not _cuda():
            values["mixed_precision"] = "no"  # the profile's fp16 is for its GPU; this machine has none
        config = TrainConfig(**values)
        config.check()
        return config

    def check(self) -> None:
        checks.choice("mode", self.mode, MODES)
        checks.text("data", str(self.data))
        checks.text("output", str(self.output))
        checks.integer("seed", self.seed, minimum=0, maximum=2**32 - 1)
        checks.integer("steps", self.steps, minimum=1)
        checks.integer("batch_size", self.batch_size, minimum=1)
        checks.integer("gradient_accumulation", self.gradient_accumulation, minimum=1)
        _positive("learning_rate", self.learning_rate)
        checks.choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        checks.integer("warmup_steps", self.warmup_steps, minimum=0, maximum=self.steps)
        _positive("max_grad_norm", self.max_grad_norm)
        checks.integer("resolution", self.resolution, minimum=8)
        if self.resolution % 8:
            raise ParameterError("resolution", self.resolution, "must be a multiple of 8 (the VAE halves it 3 times)")
        checks.integer("rank", self.rank, minimum=1)
        _positive("lora_alpha", self.lora_alpha)
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ParameterError("target_modules", self.target_modules, "a non-empty list of module names, e.g. to_q to_v")
        checks.choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.mixed_precision == "fp16" and not _cuda():
            raise ParameterError("mixed_precision", "fp16", "fp16 needs a CUDA GPU; use 'no' (or 'bf16') on a CPU")
        if self.snr_gamma is not None:
            _positive("snr_gamma", self.snr_gamma)
        checks.integer("checkpoint_every", self.checkpoint_every, minimum=1)
        checks.integer("keep_checkpoints", self.keep_checkpoints, minimum=1)
        checks.integer("validation_every", self.validation_every, minimum=0)
        if self.resume is not None:
            checks.text("resume", self.resume)
        if self.full_finetune and self.mode != "dreambooth":
            raise ParameterError("full_finetune", True, "only with mode='dreambooth' (LoRA mode always trains a LoRA)")
        if self.full_finetune and self.train_text_encoder:
            raise ParameterError("train_text_encoder", True, "not with full_finetune (about 24 GB; see the notebook)")
        if self.mode == "dreambooth":
            checks.text("instance_prompt", self.instance_prompt)
            if self.class_prompt is not None:
                checks.text("class_prompt", self.class_prompt)
                checks.integer("num_class_images", self.num_class_images, minimum=1)
                checks.number("prior_loss_weight", self.prior_loss_weight, minimum=0)
                checks.integer("class_image_steps", self.class_image_steps, minimum=1)
        else:
            if self.instance_prompt is not None:
                checks.text("instance_prompt", self.instance_prompt)
            if self.class_prompt is not None:
                raise ParameterError("class_prompt", self.class_prompt, "only with mode='dreambooth' (prior preservation)")

    @property
    def prior_preservation(self) -> bool:
        return self.mode == "dreambooth" and self.class_prompt is not None

    @property
    def family(self) -> str:
        """"sd" or "sdxl" (resolved configs only)."""
        return self.base_model.family

    def settings(self) -> dict:
        """The settings as plain JSON values (for run.json and the model card)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "base_model"}
        values["profile"] = getattr(self.profile, "name", self.profile)
        values["data"], values["output"] = str(Path(self.data).resolve()), str(Path(self.output).resolve())
        values["target_modules"] = list(self.target_modules)
        values["validation_prompts"] = list(self.validation_prompts)
        return values

    def fingerprint(self) -> str:
        values = {k: v for k, v in self.settings().items() if k not in NOT_IN_FINGERPRINT}
        if not values["random_weights"]:  # real runs keep the fingerprints they had before rehearsals existed
            del values["random_weights"]
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def with_output(self, folder) -> "TrainConfig":
        """A resolved copy whose output is `folder/<mode>-<fingerprint>`: new settings get a new folder, the same
        ones find (and resume) their old one."""
        named = dataclasses.replace(self, output=str(folder)).resolved()
        return dataclasses.replace(named, output=str(Path(folder) / f"{self.mode}-{named.fingerprint()[:8]}"))


def _positive(name: str, value) -> float:
    checks.number(name, value)
    if value <= 0:
        raise ParameterError(name, value, "must be a number > 0")
    return float(value)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
