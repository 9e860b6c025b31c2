"""How many bytes: weights per dtype and quantization, activations of a generation, KV cache of a context.

Weights. bytes = parameters x bits / 8. Quantization (bitsandbytes int8/nf4, HQQ) only touches the weights of
linear layers; convolutions, norms and embeddings stay 16-bit. Bits per weight include the quantization metadata:
int8 8 (one fp16 scale per row is negligible), nf4 4.5 (one fp32 absmax per block of 64, bitsandbytes' default
without double quantization), hqq4 4.25 and hqq2 3.0 (groups of 64 and 16, 8-bit scale and zero per group: the
mixtral-offloading settings, which give Mixtral's published 17.5 GB).

Activations of one text-to-image generation: the peak of three phases that run one after another,

    text      = N * tokens * (4 h + 2 i) * b                     per text encoder (h hidden, i MLP width)
    denoiser  = K_DENOISER * N * max_l(T_l * w_l) * b            (+ N * heads * T_attn^2 * b with eager attention)
    vae       = (K_VAE_BATCH * B + K_VAE_IMAGE) * H * W * c * b  (+ B * (H/8 * W/8)^2 * b with eager attention)

with B the batch, N = 2B under classifier-free guidance (one conditional and one unconditional pass; FLUX schnell
has no guidance, N = B), b bytes per activation, H x W the image size. The denoiser term is its widest tensor:
UNet level l has T_l latent pixels and width w_l = its channels, times 8 where the level has a transformer block
(the GEGLU projection is 2 x 4 x channels wide); a DiT has T = image patches + text tokens and w = 4 x hidden (its
MLP). The VAE term is the decoder's full-resolution stage, whose upsampler outputs c = block_out_channels[1]
channels per pixel; tiling decodes tiles of the VAE's sample_size instead of the whole image.

Calibration. The constants were fitted to the peak resident-memory rise of tiny-SD generations on the CPU
(fp32, one thread; `nbhelpers.plan.measure`), 8 settings from 128x128 to 512x512 and batch 1 to 4:
K_DENOISER = 3.9 (the measured ratio ranged 3.7-4.2 once the ~0.3 MiB fixed part is set aside), K_VAE_BATCH = 2.66
and K_VAE_IMAGE = 0.87 (e.g. 512x512 batch 2: predicted 198 MiB, measured 193 MiB). The test re-measures settings
outside the fitted set and asserts 15%. On a GPU the same constants are an estimate: the widest-tensor rule carries
over, but they were not re-fitted on CUDA (no GPU was available when they were written) and DiT and LLM activation
constants were never fitted at all.

Language models: KV cache = 2 (keys and values) * layers * kv_heads * head_dim * context * batch * b; prefill
activations = batch * context * (K_LLM * h + 2 * i * top_k) * b, plus the last token's logits in fp32.
"""

from __future__ import annotations

from nbhelpers import checks, dtypes
from nbhelpers.plan import configs

GIB = 2**30
DTYPE_BITS = {name: 8 * size for name, size in dtypes.BYTES.items()}
# awq4: AutoAWQ 4-bit, groups of 128 with an fp16 scale and a 4-bit zero each (4 + 20/128 bits), what the
# pre-quantized checkpoints vLLM serves use (nbhelpers.serve.vllm_engine)
QUANT_BITS = {"int8": 8, "nf4": 4.5, "hqq4": 4.25, "hqq2": 3.0, "awq4": 4 + 20 / 128}

K_DENOISER = 3.9
K_VAE_BATCH = 2.66
K_VAE_IMAGE = 0.87
K_LLM = 8  # not calibrated: residual, norm, q/k/v, attention output, o-projection and router, roughly
TEXT_TOKENS = {"CLIPTextModel": 77, "CLIPTextModelWithProjection": 77, "T5EncoderModel": 256}
CUDA_CONTEXT_GIB = 0.4  # the CUDA context and cuBLAS workspaces live outside PyTorch's allocator


def check_dtype(dtype: str) -> str:
    """The dtype's name ("float16"); the short names ("fp16") are accepted too."""
    return dtypes.name(dtype)


def weight_bytes(component: configs.ComponentCount, dtype: str = "float16", quant: str | None = None,
                 expert_quant: str | None = None) -> int:
    """Bytes of one component's weights. `quant` applies to linear layers, `expert_quant` (default: `quant`) to
    fused MoE experts. (Expert offloading's split between GPU and RAM is the engine's: moe.offload.memory_bytes.)"""
    bits = DTYPE_BITS[check_dtype(dtype)]
    if quant is not None:
        checks.choice("quantization", quant, QUANT_BITS)
    expert_quant = expert_quant or quant
    linear_bits = QUANT_BITS[quant] if quant else bits
    expert_bits = QUANT_BITS[expert_quant] if expert_quant else bits
    other = component.total - component.linear - component.experts
    return int((other * bits + component.linear * linear_bits + component.experts * expert_bits) / 8)


def _guided(model: str) -> bool:
    return configs.component_classes(model).get("transformer", ("", ""))[1] != "FluxTransformer2DModel"


def vae_upcast(model: str) -> bool:
    """SDXL's pipeline decodes in fp32 when its VAE says force_upcast (the original SDXL VAE overflows in fp16)."""
    classes = configs.component_classes(model)
    return model == "sdxl" and "vae" in classes and configs.component_config(model, "vae").get("force_upcast", False)


def diffusion_activations(model: str, width: int, height: int, batch: int = 1, dtype: str = "float16",
                          attention: str = "sdpa", vae_tiling: bool = False) -> dict:
    """Peak activation bytes per component (each runs alone: the text encoders, the denoiser, the VAE decoder)."""
    b = DTYPE_BITS[check_dtype(dtype)] // 8
    checks.choice("attention", attention, ("sdpa", "eager"))
    n = 2 * batch if _guided(model) else batch
    vae = configs.component_config(model, "vae")
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    lh, lw = height // factor, width // factor
    result, text_tokens = {}, 0
    for name, (_, class_name) in configs.component_classes(model).items():
        cfg = configs.component_config(model, name)
        if class_name in TEXT_TOKENS:
            tokens = TEXT_TOKENS[class_name]
            text_tokens += tokens
            h = cfg.get("hidden_size") or cfg["d_model"]
            i = cfg.get("intermediate_size") or cfg["d_ff"]
            heads = cfg.get("num_attention_heads") or cfg["num_heads"]
            result[name] = n * tokens * (4 * h + 2 * i) * b + n * heads * tokens**2 * 4
    for name, (_, class_name) in configs.component_classes(model).items():
        cfg = configs.component_config(model, name)
        if class_name == "UNet2DConditionModel":
            result[name] = _unet(cfg, n, lh, lw, b, attention)
        elif class_name.endswith("Transformer2DModel"):
            result[name] = _dit(cfg, class_name, n, lh, lw, text_tokens, b, attention)
        elif class_name == "AutoencoderKL":
            vb = 4 if vae_upcast(model) else b
            tile = cfg.get("sample_size", 512) if vae_tiling else None
            th, tw = (min(height, tile), min(width, tile)) if tile else (height, width)
            c = cfg["block_out_channels"][min(1, len(cfg["block_out_channels"]) - 1)]
            peak = (K_VAE_BATCH * batch + K_VAE_IMAGE) * th * tw * c * vb
            if attention == "eager":
                peak += batch * (th // factor * tw // factor) ** 2 * vb
            result[name] = int(peak + batch * 3 * height * width * 4)  # the decoded images, fp32
    return {name: int(value) for name, value in result.items()}


def _unet(cfg: dict, n: int, lh: int, lw: int, b: int, attention: str) -> int:
    widest, scores = 0, 0
    heads = cfg.get("attention_head_dim", 8)  # diffusers' UNet calls the number of heads attention_head_dim
    for level, (channels, block) in enumerate(zip(cfg["block_out_channels"], cfg["down_block_types"])):
        tokens = (lh >> level) * (lw >> level)
        has_attention = "CrossAttn" in block
        widest = max(widest, tokens * channels * (8 if has_attention else 1))
        if has_attention:
            level_heads = heads[level] if isinstance(heads, (list, tuple)) else heads
            scores = max(scores, n * level_heads * tokens**2 * b)
    return int(K_DENOISER * n * widest * b + (scores if attention == "eager" else 0))


def _dit(cfg: dict, class_name: str, n: int, lh: int, lw: int, text_tokens: int, b: int, attention: str) -> int:
    patch = 2 if class_name == "FluxTransformer2DModel" else cfg.get("patch_size", 2)  # FLUX packs 2x2 latents
    heads = cfg["num_attention_heads"]
    hidden = heads * cfg["attention_head_dim"]
    tokens = (lh // patch) * (lw // patch) + (text_tokens if class_name != "FluxTransformer2DModel" else 256)
    scores = n * heads * tokens**2 * b if attention == "eager" else 0
    return int(K_DENOISER * n * tokens * 4 * hidden * b + scores)


def _llm_config(model: str):
    from nbhelpers.moe import accounting

    return accounting.load_config(model)


def kv_cache_bytes(model: str, context: int, batch: int = 1, dtype: str = "float16") -> int:
    """The same formula as notebook 01's planner (nbhelpers.moe.context), for a shipped model name."""
    from nbhelpers.moe import context as moe_context

    return moe_context.kv_cache_bytes(_llm_config(model), context, check_dtype(dtype), batch)


def llm_activation_bytes(model: str, context: int, batch: int = 1, dtype: str = "float16") -> int:
    config = _llm_config(model)
    b = DTYPE_BITS[check_dtype(dtype)] // 8
    top_k = getattr(config, "num_experts_per_tok", 1)
    return int(batch * context * (K_LLM * config.hidden_size + 2 * config.intermediate_size * top_k) * b
               + batch * config.vocab_size * 4)


def gib(value: float) -> float:
    return round(value / GIB, 2)
