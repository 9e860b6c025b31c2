"""How much memory and disk the offload engine and the converter need, from a model's config: arithmetic only.

The parameter counts come from the real transformers model built without weights (`moe.accounting.meta_model`);
everything else is multiplication. Importing this module does not import torch, so the planner (`nbhelpers plan`)
can import it; torch loads when a count is first needed.

Mixtral-8x7B-Instruct on Colab (computed by `conversion_budget`, int2 with groups of 64, non-experts in fp16):
the output is 17.3 GB (14.1 GB experts + 3.2 GB rest), the largest Hub shard ~5 GB, so ~22.3 GB of local disk at
the peak (Colab has ~70 GB free; a free Drive's 15 GB cannot hold the result: keep it on local disk); RAM peaks at
7.3 GB in the worst case (one layer of 16-bit experts waiting across a shard boundary 2.8 GB, two pending output
layers 1.1 GB, float32 quantizer workspace 1.9 GB, ~1.5 GB for Python and torch) out of 12.7 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers.moe import accounting
from nbhelpers.moe.offload import quant, support

GB = accounting.GB  # decimal gigabytes, as model cards count


@dataclass(frozen=True)
class ParameterSplit:
    rest: int  # parameters that are not experts (attention, norms, routers, embeddings)
    experts: int  # parameters of all experts
    per_expert: int
    count: int  # experts per MoE layer
    layers: int  # MoE layers


def parameter_split(config) -> ParameterSplit:
    """Where a model's parameters are, counted on the model built without weights (`accounting.meta_model`)."""
    model = accounting.meta_model(config)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    total = sum(p.numel() for p in model.parameters())
    layers = sum(1 for n, _ in model.named_parameters() if n.endswith("experts.down_proj"))
    count = support.expert_count(config)
    return ParameterSplit(total - experts, experts, experts // (layers * count), count, layers)


def memory_bytes(config, cache_size: int, quantization="int2", group_size=None, exclusive: bool = True,
                 dtype_bytes: int = 2) -> dict:
    """Bytes of weights the engine holds for `cache_size` experts per layer: on the GPU (the non-expert weights,
    the cached experts plus the spare buffer of exclusive mode, one dequantized expert as workspace) and in
    pinned host memory (the other experts). The planner (`nbhelpers plan`) uses the same figures."""
    split = parameter_split(config)
    count, layers = split.count, split.layers
    expert = split.per_expert * quant.bits_per_weight(quantization, group_size, dtype_bytes) / 8
    on_device = layers * (cache_size + (1 if exclusive and cache_size < count else 0))
    on_host = layers * (count - cache_size) if exclusive else layers * count
    return {"expert": expert, "gpu_rest": split.rest * dtype_bytes, "gpu_experts": on_device * expert,
            "gpu_workspace": split.per_expert * dtype_bytes if quantization else 0, "ram_pinned": on_host * expert}


def offload_memory_plan(config, cache_size: int, quantization="int2", group_size=None, exclusive: bool = True,
                        dtype_bytes: int = 2) -> dict:
    """Decimal GB (as `moe.memory_plan`) of VRAM and of host RAM the engine needs for `cache_size` experts per layer
    (weights only)."""
    b = memory_bytes(config, cache_size, quantization, group_size, exclusive, dtype_bytes)
    return {"expert_mb": round(b["expert"] / 1e6, 1),
            "vram_gb": round((b["gpu_rest"] + b["gpu_experts"] + b["gpu_workspace"]) / GB, 2),
            "vram_experts_gb": round(b["gpu_experts"] / GB, 2), "vram_rest_gb": round(b["gpu_rest"] / GB, 2),
            "ram_pinned_gb": round(b["ram_pinned"] / GB, 2)}


def conversion_budget(config, quantization="int2", group_size=None, dtype_bytes: int = 2, source_bytes: int = 2,
                      largest_shard_gb: float = 5.0, baseline_gb: float = 1.5) -> dict:
    """Disk and RAM needed by `convert_checkpoint` (computed, not measured): see the module docstring."""
    split = parameter_split(config)
    rest, expert_params, per_expert, layers = split.rest, split.experts, split.per_expert, split.layers
    bits = quant.bits_per_weight(quantization, group_size, dtype_bytes)
    out_experts = expert_params * bits / 8
    out_rest = rest * dtype_bytes
    layer_out = out_experts / layers + rest * dtype_bytes / layers
    raw_layer_experts = expert_params / layers * source_bytes  # worst case: a layer split across two shards
    workspace = per_expert / 3 * 2 * 4 * 4  # the gate_up matrix in float32, ~4 live temporaries in the quantizer
    return {"output_gb": round((out_experts + out_rest) / GB, 2), "experts_gb": round(out_experts / GB, 2),
            "rest_gb": round(out_rest / GB, 2), "peak_disk_gb": round((out_experts + out_rest) / GB +
                                                                      largest_shard_gb, 2),
            "peak_ram_gb": round(baseline_gb + (raw_layer_experts + 2 * layer_out + workspace) / GB, 2)}
