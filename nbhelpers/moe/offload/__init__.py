"""Run an MoE model whose experts do not fit on the GPU: quantized experts, an LRU cache per layer, prefetch.

- quant:    group-wise int8/int4/int3/int2 quantization of expert weights with HQQ
- cache:    per-layer device cache of a fixed number of experts, LRU eviction, copies on a side CUDA stream
- experts:  the experts module that replaces `block.experts` (the library's math, weights from the cache)
- prefetch: guess the next layer's experts with its router and start copying them
- engine:   `offload_experts(model, cache_size=..., quantization=..., prefetch=...)` -> engine with `.stats()`
- convert:  stream a checkpoint shard by shard, quantize the experts, save a compact checkpoint
- load:     load that checkpoint into the engine without materializing the 16-bit experts
- budgets:  memory and disk the engine and the converter need, from a config (arithmetic, no torch at import)
- support:  which transformers 5 MoE architectures are supported (fused experts layout)

Importing this package is cheap: torch and transformers load when a function needs them.
"""

from nbhelpers.lazy import exports

_LAZY = {
    "offload_experts": "engine", "OffloadEngine": "engine",
    "quantize": "quant", "dequantize": "quant", "bits_per_weight": "quant", "weight_error": "quant",
    "ExpertCache": "cache", "CacheStats": "cache", "OffloadedExperts": "experts", "ExpertCodec": "experts",
    "Prefetcher": "prefetch", "SUPPORTED": "support", "check_supported": "support",
    "convert_checkpoint": "convert", "load_offloaded": "load", "conversion_budget": "budgets",
    "offload_memory_plan": "budgets", "memory_bytes": "budgets",
}


__getattr__, __dir__ = exports(__name__, _LAZY)
