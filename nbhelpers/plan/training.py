"""Will training fit? The predicted GPU peak of a LoRA, DreamBooth-LoRA or full DreamBooth run of nbhelpers.train.

Sizes in GiB (2**30 bytes), like the rest of the planner: a T4 shows 15,360 MiB = 15.0 GiB to PyTorch.

    training_plan("sdxl", "t4", mode="lora")     # the t4 profile's SDXL settings: parts, peak, fits or not

A run passes through three phases one after another; the peak is the largest:

- class images (DreamBooth with prior preservation): the whole pipeline generates, as `plan` predicts for
  inference at the training size (priors.class_batch images at once, with classifier-free guidance);
- caching: prompts and (with cache_latents) latents are encoded once; the VAE encoder's activations;
- training: the frozen 16-bit UNet and VAE (frozen text encoders left the GPU after caching the prompts), the
  trainable weights in fp32 with their gradients and AdamW's two states (4 + 4 + 8 bytes per parameter, 4 + 4 + 2
  with 8-bit Adam), the activations saved for backward, and the CUDA context.

Activations are counted, not fitted. The real UNet is built on the meta device from the shipped config (shapes,
no memory), the LoRA is added as the trainer adds it, and one forward pass at the asked size runs there while a
hook adds up every tensor autograd keeps for backward (parameters excluded, each tensor once). Attention is
counted as PyTorch's memory-efficient SDPA keeps it (queries, keys, values and output; not the T x T scores).
With gradient checkpointing (diffusers checkpoints each ResnetBlock2D and BasicTransformerBlock) only each block's
input stays, plus the saved tensors of one block while backward recomputes it. Backward also holds gradients of
activations: counted as twice the largest saved tensor. What is not counted: allocator fragmentation (the 95%
headroom of the verdict), cuDNN workspaces, the fp32 copies autocast makes for normalisation layers (a reason to
keep gradient checkpointing on where the plan says it could go), and the text encoders' activations when they
train (77 tokens: small). These are predictions: no GPU was available to measure them when this was written.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers import checks
from nbhelpers.plan import configs, memory
from nbhelpers.train.data import encode_batch
from nbhelpers.train.priors import class_batch

GIB = memory.GIB
MODES = ("lora", "dreambooth", "dreambooth-full")
CHECKPOINTED = ("ResnetBlock2D", "BasicTransformerBlock")  # what diffusers' gradient checkpointing recomputes
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # nbhelpers.train.config.UNET_TARGETS
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass(frozen=True)
class TrainSettings:
    resolution: int
    batch_size: int = 1
    rank: int = 4
    gradient_checkpointing: bool = True
    use_8bit_adam: bool = True
    cache_latents: bool = True
    train_text_encoder: bool = False
    dtype: str = "float16"  # the frozen weights and the activations (mixed precision)

    @classmethod
    def from_defaults(cls, defaults: dict, mode: str = "lora", dtype: str = "float16") -> "TrainSettings":
        """A profile's "train" / "train_sdxl" defaults (nbhelpers.profiles) as the planner reads them."""
        rank = defaults["dreambooth_rank"] if mode == "dreambooth" else defaults["rank"]
        return cls(defaults["resolution"], defaults["batch_size"], rank, defaults["gradient_checkpointing"],
                   defaults["use_8bit_adam"], defaults["cache_latents"], dtype=dtype)

    def describe(self) -> str:
        parts = [f"{self.resolution} px", f"batch {self.batch_size}", f"rank {self.rank}", self.dtype.replace("float", "fp")]
        parts += ["gradient checkpointing"] if self.gradient_checkpointing else []
        parts += ["8-bit Adam"] if self.use_8bit_adam else ["AdamW"]
        parts += ["cached latents"] if self.cache_latents else []
        parts += ["text encoder LoRA"] if self.train_text_encoder else []
        return ", ".join(parts)


def trainable_model(model: str) -> str:
    """The short name of a model nbhelpers.train can train (a UNet: SD 1.x or SDXL), else ParameterError."""
    model = configs.check_model(model)
    if configs.kind(model) != "diffusion" or "unet" not in configs.component_classes(model):
        raise checks.ParameterError("model", model, "a UNet model for training (nbhelpers.train trains SD 1.x and "
                                    "SDXL): sd15, sdxl, tiny-sd, tiny-sdxl or their Hub ids")
    return model


def check(model: str, mode: str, settings: TrainSettings) -> str:
    model = trainable_model(model)
    checks.choice("mode", mode, MODES)
    checks.integer("resolution", settings.resolution, minimum=64, maximum=4096)
    if settings.resolution % 64:
        raise checks.ParameterError("resolution", settings.resolution, "must be a multiple of 64")
    checks.integer("batch", settings.batch_size, minimum=1, maximum=64)
    checks.integer("rank", settings.rank, minimum=1, maximum=1024)
    memory.check_dtype(settings.dtype)
    return model


_SAVED: dict = {}
_COUNTERS: dict = {}


def saved_activations(model: str, resolution: int, batch: int, full: bool = False, dtype: str = "float16") -> dict:
    """Bytes autograd keeps for backward in one UNet forward pass (meta device; see the module docstring), with a
    LoRA on the attention projections or, `full`, every UNet weight training. Returns total (no checkpointing),
    checkpointed (what stays with checkpointing: block inputs and what runs outside the blocks), largest_block and
    largest_tensor."""
    key = (model, resolution, batch, full, dtype)
    if key not in _SAVED:
        if (model, full, dtype) not in _COUNTERS:  # one meta build per model and kind: runs are then cheap
            _COUNTERS[model, full, dtype] = _SavedCounter(model, full, dtype)
        _SAVED[key] = _COUNTERS[model, full, dtype].count(resolution, batch)
    return dict(_SAVED[key])


class _SavedCounter:
    """The meta-device UNet with hooks: `count(resolution, batch)` runs one forward pass and adds up what it saves."""

    def __init__(self, model: str, full: bool, dtype: str):
        import torch

        from nbhelpers import dtypes

        self.dtype = dtypes.to_torch(dtype)
        self.cfg = configs.component_config(model, "unet")
        self.unet = configs.build("diffusers", "UNet2DConditionModel", self.cfg).to(self.dtype)
        self.unet.requires_grad_(full)
        if not full:
            from peft import LoraConfig, inject_adapter_in_model

            # rank 1 stands for any rank: a LoRA keeps its input (rank-independent) and a T x rank product
            inject_adapter_in_model(LoraConfig(r=1, lora_alpha=1, target_modules=list(LORA_TARGETS)), self.unet)
        self.params = {id(p) for p in self.unet.parameters()}
        self.owner: list = []  # the checkpointed block running now
        blocks = [m for m in self.unet.modules() if type(m).__name__ in CHECKPOINTED]
        for index, block in enumerate(blocks):
            block.register_forward_pre_hook(self._enter(index), with_kwargs=True)
            block.register_forward_hook(self._leave)
        self.torch = torch

    def _enter(self, index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor"))
            self.inputs[index] = hidden.numel() * hidden.element_size() if hidden.requires_grad else 0
            self.owner.append(index)
        return hook

    def _leave(self, module, args, output):  # returns None: the output is left as it is
        self.owner.pop()

    def _pack(self, tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(tensor) not in self.params and id(base) not in self.params:
            size = base.numel() * base.element_size()
            self.saved.setdefault(self.owner[-1] if self.owner else None, {})[id(base)] = size
        return tensor

    def count(self, resolution: int, batch: int) -> dict:
        torch, cfg = self.torch, self.cfg
        import torch.nn.functional as F

        class EfficientAttention(torch.autograd.Function):
            """What the memory-efficient SDPA kernel keeps for backward: queries, keys, values and the output."""

            @staticmethod
            def forward(ctx, query, key, value):
                out = query.new_empty(query.shape[:-1] + value.shape[-1:])
                ctx.save_for_backward(query, key, value, out)
                return out

        def attention(query, key, value, *args, **kwargs):
            return EfficientAttention.apply(query, key, value)

        self.saved, self.inputs = {}, {}
        side = resolution // 8  # SD and SDXL VAEs downsample 8 times
        meta = {"device": "meta", "dtype": self.dtype}
        latents = torch.empty(batch, cfg["in_channels"], side, side, **meta)
        states = torch.empty(batch, 77, cfg["cross_attention_dim"], **meta)
        extra = {}
        if cfg.get("addition_embed_type") == "text_time":  # SDXL: pooled text vector + six size numbers
            pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
            extra["added_cond_kwargs"] = {"text_embeds": torch.empty(batch, pooled, **meta),
                                          "time_ids": torch.empty(batch, 6, **meta)}
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = attention
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
                self.unet(latents, torch.zeros(batch, dtype=torch.long, device="meta"), states, **extra)
        finally:
            F.scaled_dot_product_attention = original
        sums = {block: sum(sizes.values()) for block, sizes in self.saved.items()}
        outside = sums.pop(None, 0)
        largest = max((size for sizes in self.saved.values() for size in sizes.values()), default=0)
        return {"total": outside + sum(sums.values()), "checkpointed": outside + sum(self.inputs.values()),
                "largest_block": max(sums.values(), default=0), "largest_tensor": largest}


_LORA: dict = {}


def lora_parameters(model: str, rank: int, component: str = "unet", targets=LORA_TARGETS) -> int:
    """rank x (inputs + outputs) for each targeted Linear layer, counted on the meta-device model."""
    if (model, component) not in _LORA:
        import torch

        library, class_name = configs.component_classes(model)[component]
        module = configs.build(library, class_name, configs.component_config(model, component))
        _LORA[model, component] = sum(m.in_features + m.out_features for name, m in module.named_modules()
                                      if isinstance(m, torch.nn.Linear) and any(name.endswith(t) for t in targets))
    return rank * _LORA[model, component]


def training_peak(model: str, mode: str, settings: TrainSettings) -> dict:
    """Every part of the predicted peak in bytes, and the peak itself, for one training run."""
    model = check(model, mode, settings)
    counts = {c.name: c for c in configs.components(model)}
    dtype = settings.dtype
    encoders = [name for name in counts if name.startswith("text_encoder")]
    unet_bytes = memory.weight_bytes(counts["unet"], dtype)
    vae_bytes = memory.weight_bytes(counts["vae"], dtype)  # SDXL: the profiles' fp16-fix VAE stays 16-bit
    encoder_bytes = sum(memory.weight_bytes(counts[n], dtype) for n in encoders)
    full = mode == "dreambooth-full"
    prior = mode.startswith("dreambooth")
    examples = settings.batch_size * (2 if prior else 1)  # instance + class examples in one batch
    state_bytes = 4 + 4 + (2 if settings.use_8bit_adam else 8)  # fp32 weight + gradient + AdamW's two states
    if full:
        trainable = counts["unet"].total
        frozen_unet = 0  # the whole UNet trains in fp32 (its 16-bit copy is replaced)
    else:
        trainable = lora_parameters(model, settings.rank)
        frozen_unet = unet_bytes
    if settings.train_text_encoder and not full:
        trainable += sum(lora_parameters(model, settings.rank, n, TEXT_TARGETS) for n in encoders)
    saved = saved_activations(model, settings.resolution, examples, full, dtype)
    if settings.gradient_checkpointing:
        activations = saved["checkpointed"] + saved["largest_block"]
    else:
        activations = saved["total"]
    activations += 2 * saved["largest_tensor"]
    context = memory.CUDA_CONTEXT_GIB * GIB
    parts = {
        "unet_weights": frozen_unet,
        "vae_weights": vae_bytes,
        "text_encoder_weights": encoder_bytes if settings.train_text_encoder else 0,  # frozen ones left the GPU
        "trainable_and_optimizer": trainable * state_bytes,
        "activations": activations,
        "cuda_context": context,
    }
    training = sum(parts.values())
    b = memory.DTYPE_BITS[memory.check_dtype(dtype)] // 8
    vae_cfg = configs.component_config(model, "vae")
    per_call = encode_batch(settings.resolution)  # what the trainer's encode_all passes the VAE at once
    encode = (memory.K_VAE_BATCH * per_call + memory.K_VAE_IMAGE) * settings.resolution ** 2 \
        * vae_cfg["block_out_channels"][0] * b
    caching = unet_bytes + vae_bytes + encoder_bytes + context + (encode if settings.cache_latents else 0)
    phases = {"training": training, "caching": caching}
    if prior:
        acts = memory.diffusion_activations(model, settings.resolution, settings.resolution,
                                            class_batch(settings.resolution), dtype)
        phases["class_images"] = unet_bytes + vae_bytes + encoder_bytes + max(acts.values()) + context
    if not settings.cache_latents:
        parts["activations"] += encode * examples / per_call  # the VAE encodes each batch during training
        phases["training"] = sum(parts.values())
    return {"parts": parts, "phases": phases, "trainable_parameters": trainable,
            "peak": max(phases.values()), "peak_phase": max(phases, key=phases.get)}


def profile_settings(model: str, gpu: str, mode: str = "lora") -> TrainSettings:
    """The settings nbhelpers.train uses for `model` on `gpu`: the t4 profile's on a T4, the large profile's on
    bigger GPUs ("train_sdxl" defaults for SDXL, "train" for SD 1.x)."""
    from nbhelpers.plan.gpus import gpu_key
    from nbhelpers.profiles import PROFILES

    profile = PROFILES["t4" if gpu_key(gpu) == "t4" else "large"]
    is_xl = configs.component_config(trainable_model(model), "unet").get("addition_embed_type") == "text_time"
    defaults = profile.defaults["train_sdxl" if is_xl else "train"]
    dtype = {"fp16": "float16", "bf16": "bfloat16", "no": "float32"}[defaults["mixed_precision"]]
    return TrainSettings.from_defaults(defaults, "dreambooth" if mode.startswith("dreambooth") else mode, dtype)


def training_plan(model: str, gpu: str = "t4", mode: str = "lora", settings: TrainSettings | None = None) -> dict:
    """The predicted peak of `settings` (default: the profile's for this GPU) and of the usual alternatives
    (without gradient checkpointing or 8-bit Adam, a bigger batch, a smaller resolution), each with fits or not.
    All sizes in GiB."""
    from dataclasses import replace

    from nbhelpers.plan import verdict
    from nbhelpers.plan.gpus import get_gpu, gpu_key

    card = get_gpu(gpu)
    model = configs.check_model(model)
    checks.choice("mode", mode, MODES)
    settings = settings or profile_settings(model, gpu, mode)
    check(model, mode, settings)
    variants = [("as set", settings)]
    variants += [("without gradient checkpointing", replace(settings, gradient_checkpointing=False))] \
        if settings.gradient_checkpointing else []
    variants += [("AdamW instead of 8-bit Adam", replace(settings, use_8bit_adam=False))] \
        if settings.use_8bit_adam and mode != "lora" else []
    variants += [("batch x2", replace(settings, batch_size=settings.batch_size * 2))]
    variants += [(f"{side} px", replace(settings, resolution=side)) for side in (768, 512) if side < settings.resolution]
    ram = verdict.RAM_BASE_GIB * GIB + sum(memory.weight_bytes(c, settings.dtype) for c in configs.components(model))
    rows = []
    for label, variant in variants:
        peak = training_peak(model, mode, variant)
        rows.append({"setting": label, "settings": variant.describe(), "gpu_gib": memory.gib(peak["peak"]),
                     "peak_phase": peak["peak_phase"], "ram_gib": memory.gib(ram),
                     "fits": verdict._fits(peak["peak"], ram, card),
                     "parts_gib": {k: memory.gib(v) for k, v in peak["parts"].items()},
                     "phases_gib": {k: memory.gib(v) for k, v in peak["phases"].items()},
                     "trainable_parameters": peak["trainable_parameters"]})
    return {"model": model, "source": configs.source(model), "gpu": gpu_key(gpu), "gpu_name": card.name,
            "vram_gib": card.vram_gib, "ram_gib": card.ram_gib, "mode": mode, "rows": rows,
            "fits": rows[0]["fits"], "gpu_peak_gib": rows[0]["gpu_gib"]}


def format_training_plan(result: dict) -> str:
    first = result["rows"][0]
    lines = [f"{result['model']} ({result['source']}) {result['mode']} training on {result['gpu_name']} "
             f"({result['vram_gib']} GiB VRAM, {result['ram_gib']} GiB RAM); sizes in GiB (2**30 bytes)",
             f"  settings: {first['settings']}; {first['trainable_parameters']:,} trainable parameters",
             "  parts of the training step: " + ", ".join(f"{k} {v}" for k, v in first["parts_gib"].items()),
             "  phases: " + ", ".join(f"{k} {v}" for k, v in first["phases_gib"].items()),
             f"  {'setting':<34} {'GPU GiB':>8} {'RAM GiB':>8}  fits  (peak phase)"]
    for row in result["rows"]:
        lines.append(f"  {row['setting']:<34} {row['gpu_gib']:>8.2f} {row['ram_gib']:>8.2f}  "
                     f"{'yes' if row['fits'] else 'no ':<4}  ({row['peak_phase']})")
    lines.append("verdict: " + ("fits" if result["fits"] else "does not fit") + f" with these settings "
                 f"(predicted peak {result['gpu_peak_gib']} GiB; 95% of {result['vram_gib']} GiB usable)")
    return "\n".join(lines)


def training_table(gpu: str = "t4", models=("sd15", "sdxl"), modes=("lora", "dreambooth")) -> list[dict]:
    """One row per model and mode with the profile's settings: what 06's training-efficiency rows compare their
    measurements with."""
    rows = []
    for model in models:
        for mode in modes:
            result = training_plan(model, gpu, mode)
            first = result["rows"][0]
            rows.append({"model": model, "mode": mode, "settings": first["settings"],
                         "predicted_gpu_gib": first["gpu_gib"], "peak_phase": first["peak_phase"],
                         "training_step_gib": first["phases_gib"]["training"], "fits": first["fits"]})
    return rows
