"""The verdict: the cheapest setting under which a model fits a GPU and its runtime's RAM.

Settings are tried from cheapest (fastest, same pictures or text) to dearest, and the first that fits wins:

- diffusion: 16-bit on the GPU; + VAE tiling (decode in tiles: lower peak, seams rare); model CPU offload (one
  component on the GPU at a time: slower, same result); int8 then nf4 quantization of the denoiser and T5 (slight
  quality change); each again with offload; finally sequential CPU offload (layer by layer: very slow).
- MoE language models: 16-bit; int8; nf4; HQQ (attention 4-bit, experts 2-bit); expert offloading (HQQ, half of
  each layer's experts on the GPU in an LRU cache, the rest in RAM: Eliseev & Mazur 2023); sequential offload.

A setting fits when the predicted GPU peak (weights + the largest activation + the CUDA context) is at most 95% of
the GPU's memory (the rest goes to allocator fragmentation) and the predicted RAM peak at most 95% of the RAM.
The RAM peak counts what passes through RAM while loading: diffusers builds a whole pipeline in RAM before `.to()`.
"""

from __future__ import annotations

from nbhelpers import checks, dtypes
from nbhelpers.plan import configs, memory
from nbhelpers.plan.gpus import get_gpu, gpu_key

GIB = memory.GIB
RAM_BASE_GIB = 2.5  # Python, torch, the CUDA libraries and diffusers/transformers themselves (estimate)
SHARD_GIB = 5.0  # transformers loads a checkpoint shard by shard straight to the GPU
HEADROOM = 0.95
MODELS = configs.model_names


def _fits(gpu_bytes: float, ram_bytes: float, gpu) -> bool:
    return gpu_bytes <= HEADROOM * gpu.vram_gib * GIB and ram_bytes <= HEADROOM * gpu.ram_gib * GIB


def default_size(model: str) -> int:
    """The resolution a model was trained at: the denoiser's sample_size times the VAE's downsampling."""
    classes = configs.component_classes(model)
    denoiser = "unet" if "unet" in classes else "transformer"
    vae = configs.component_config(model, "vae")
    return configs.component_config(model, denoiser).get("sample_size", 128) * 2 ** (len(vae["block_out_channels"]) - 1)


def _quantizable(class_name: str) -> bool:
    return class_name in ("UNet2DConditionModel", "T5EncoderModel") or class_name.endswith("Transformer2DModel")


def _diffusion_settings(model, gpu, width, height, batch, dtype, attention) -> list[dict]:
    counts = {c.name: c for c in configs.components(model)}
    classes = configs.component_classes(model)
    settings = []
    for quant in (None, "int8", "nf4"):
        for offload in ("none", "model"):
            for tiling in (False, True):
                weights = {}
                for name, count in counts.items():
                    component_dtype = "float32" if name == "vae" and memory.vae_upcast(model) else dtype
                    weights[name] = memory.weight_bytes(count, component_dtype,
                                                        quant if _quantizable(classes[name][1]) else None)
                acts = memory.diffusion_activations(model, width, height, batch, dtype, attention, tiling)
                context = memory.CUDA_CONTEXT_GIB * GIB
                if offload == "none":
                    gpu_peak = sum(weights.values()) + max(acts.values()) + context
                else:
                    gpu_peak = max(weights[n] + acts.get(n, 0) for n in weights) + context
                ram_peak = RAM_BASE_GIB * GIB + sum(weights.values())
                label = [dtypes.short(dtype) if not quant else f"{quant} denoiser/T5"]
                label += ["model CPU offload"] if offload == "model" else []
                label += ["VAE tiling"] if tiling else []
                settings.append({"setting": " + ".join(label), "quantization": quant, "offload": offload,
                                 "vae_tiling": tiling, "gpu_gib": memory.gib(gpu_peak), "ram_gib": memory.gib(ram_peak),
                                 "fits": _fits(gpu_peak, ram_peak, gpu)})
    acts = memory.diffusion_activations(model, width, height, batch, dtype, attention, True)
    largest_layer = max(c.total for c in counts.values()) * 2 / 40  # a block of the biggest component, roughly
    gpu_peak = max(acts.values()) + largest_layer + memory.CUDA_CONTEXT_GIB * GIB
    ram_peak = RAM_BASE_GIB * GIB + sum(memory.weight_bytes(c, dtype) for c in counts.values())
    settings.append({"setting": f"{dtypes.short(dtype)} + sequential CPU offload + VAE tiling (very slow)",
                     "quantization": None, "offload": "sequential", "vae_tiling": True, "gpu_gib": memory.gib(gpu_peak),
                     "ram_gib": memory.gib(ram_peak), "fits": _fits(gpu_peak, ram_peak, gpu)})
    return settings


def _moe_settings(model, gpu, context, batch, dtype) -> list[dict]:
    (count,) = configs.components(model)
    kv = memory.kv_cache_bytes(model, context, batch, dtype)
    act = memory.llm_activation_bytes(model, context, batch, dtype)
    cuda = memory.CUDA_CONTEXT_GIB * GIB
    base = RAM_BASE_GIB * GIB
    rows = []

    def add(name, quant, expert_quant, gpu_weights, ram_weights, note=""):
        gpu_peak = gpu_weights + kv + act + cuda
        ram_peak = base + ram_weights
        rows.append({"setting": name, "quantization": quant, "expert_quantization": expert_quant,
                     "gpu_gib": memory.gib(gpu_peak), "ram_gib": memory.gib(ram_peak),
                     "fits": _fits(gpu_peak, ram_peak, gpu), "note": note})

    bnb_note = "bitsandbytes in transformers 5 skips fused expert weights (bitsandbytes #1849): quantize them yourself"
    for quant in (None, "int8", "nf4"):
        weights = memory.weight_bytes(count, dtype, quant)
        add(quant or dtypes.short(dtype), quant, quant, weights, min(weights, SHARD_GIB * GIB),
            bnb_note if quant else "")
    hqq = memory.weight_bytes(count, dtype, "hqq4", "hqq2")
    add("HQQ attention 4-bit + experts 2-bit, all on the GPU", "hqq4", "hqq2", hqq, min(hqq, SHARD_GIB * GIB),
        "mixtral-offloading's published format (17.5 GB for Mixtral)")
    add(*_expert_offloading(model, dtype), "what 01b runs; mixtral-offloading: 2.09 tok/s on a Colab T4 (published)")
    non_expert = memory.weight_bytes(count, dtype) - count.experts * dtypes.BYTES[dtype]
    one_layer = count.experts * dtypes.BYTES[dtype] // max(1, _layers(model))
    add(f"{dtypes.short(dtype)} + sequential offload of experts (very slow)", None, None, non_expert + one_layer,
        memory.weight_bytes(count, dtype), "naive accelerate offloading: 0.66 tok/s for Mixtral on a T4 (published)")
    return rows


def _expert_offloading(model: str, dtype: str) -> tuple:
    """The row of nbhelpers.moe.offload with HQQ int2 experts, half of each layer's experts cached on the GPU: the
    engine's own memory figures (`moe.offload.budgets.memory_bytes`), so the planner and 01b agree."""
    from nbhelpers.moe import accounting
    from nbhelpers.moe.offload.budgets import memory_bytes
    from nbhelpers.moe.offload.support import expert_count

    config = accounting.load_config(model)
    count = expert_count(config)
    cache = max(1, count // 2)
    b = memory_bytes(config, cache, "int2", dtype_bytes=dtypes.BYTES[dtype])
    name = f"expert offloading (HQQ int2, {cache} of {count} experts per layer on the GPU, LRU)"
    return name, None, "int2", b["gpu_rest"] + b["gpu_experts"] + b["gpu_workspace"], b["ram_pinned"]


def _layers(model: str) -> int:
    from nbhelpers.moe import accounting

    return accounting.load_config(model).num_hidden_layers


def plan(model: str, gpu: str = "t4", *, width: int | None = None, height: int | None = None, batch: int = 1,
         context: int = 4096, attention: str = "sdpa") -> dict:
    """Parameters, memory per setting and the verdict for `model` on `gpu`. All checks run before any work."""
    model = configs.check_model(model)
    card = get_gpu(gpu)
    checks.integer("batch", batch, minimum=1, maximum=64)
    checks.integer("context", context, minimum=1, maximum=1_048_576)
    checks.choice("attention", attention, ("sdpa", "eager"))
    for name, value in (("width", width), ("height", height)):
        if value is not None:
            checks.integer(name, value, minimum=64, maximum=4096)
            if value % 64:
                raise checks.ParameterError(name, value, "must be a multiple of 64")
    dtype = "bfloat16" if card.bf16 else "float16"
    kind = configs.kind(model)
    counts = configs.components(model)
    result = {"model": model, "source": configs.source(model), "gpu": gpu_key(gpu), "gpu_name": card.name,
              "vram_gib": card.vram_gib, "ram_gib": card.ram_gib, "kind": kind, "dtype": dtypes.short(dtype),
              "parameters": sum(c.total for c in counts),
              "components": [dict(c.as_dict(), analytic=configs.analytic_count(model, c),
                                  weights_16bit_gib=memory.gib(memory.weight_bytes(c, "float16"))) for c in counts]}
    if kind == "diffusion":
        side = default_size(model)
        width, height = width or side, height or side
        result.update(width=width, height=height, batch=batch, attention=attention)
        result["activations_gib"] = {k: memory.gib(v) for k, v in
                                     memory.diffusion_activations(model, width, height, batch, dtype, attention).items()}
        result["settings"] = _diffusion_settings(model, card, width, height, batch, dtype, attention)
    else:
        result.update(context=context, batch=batch,
                      kv_cache_gib=memory.gib(memory.kv_cache_bytes(model, context, batch, dtype)))
        result["settings"] = _moe_settings(model, card, context, batch, dtype)
    fitting = [s for s in result["settings"] if s["fits"]]
    result["verdict"] = fitting[0]["setting"] if fitting else None
    result["verdict_gpu_gib"] = fitting[0]["gpu_gib"] if fitting else None
    return result


def plan_table(models=None, gpu: str = "t4", **options) -> list[dict]:
    """One row per model: parameters, 16-bit weights, the cheapest setting that fits `gpu` and its GPU peak."""
    rows = []
    for name in models or configs.DIFFUSION + configs.moe_names():
        result = plan(name, gpu, **options)
        rows.append({"model": result["model"], "parameters_b": round(result["parameters"] / 1e9, 2),
                     "weights_16bit_gib": round(sum(c["weights_16bit_gib"] for c in result["components"]), 2),
                     "verdict": result["verdict"] or "does not fit", "gpu_gib": result["verdict_gpu_gib"],
                     "fits_plain_16bit": result["settings"][0]["fits"]})
    return rows


def format_plan(result: dict) -> str:
    """The plan as a few lines of text for the command line."""
    lines = [f"{result['model']} ({result['source']}): {result['parameters']:,} parameters; "
             f"{result['gpu_name']}: {result['vram_gib']} GiB VRAM, {result['ram_gib']} GiB RAM"]
    for c in result["components"]:
        extra = f", {c['experts']:,} in experts, {c['active']:,} active per token" if c["experts"] else ""
        lines.append(f"  {c['component']:<15} {c['class']:<28} {c['parameters']:>15,} params "
                     f"{c['weights_16bit_gib']:>7.2f} GiB in 16-bit{extra}")
    if result["kind"] == "diffusion":
        lines.append(f"  activations at {result['width']}x{result['height']}, batch {result['batch']} "
                     f"({result['attention']}): " + ", ".join(f"{k} {v} GiB" for k, v in result["activations_gib"].items()))
    else:
        lines.append(f"  KV cache for {result['context']} tokens: {result['kv_cache_gib']} GiB")
    lines.append(f"  {'setting':<78} {'GPU GiB':>8} {'RAM GiB':>8}  fits")
    for s in result["settings"]:
        lines.append(f"  {s['setting']:<78} {s['gpu_gib']:>8.2f} {s['ram_gib']:>8.2f}  {'yes' if s['fits'] else 'no'}")
    lines.append(f"verdict: {result['verdict'] or 'does not fit on this GPU in any setting the planner knows'}")
    return "\n".join(lines)
