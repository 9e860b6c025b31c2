"""`offload_experts(model, ...)`: put a transformers 5 MoE model's experts in per-layer LRU caches, and measure.

    engine = offload_experts(model, cache_size=2, quantization="int2", prefetch=True)
    model.generate(...)          # the model is changed in place; generation works as before
    engine.stats()               # hit rate, bytes moved per token, tokens/s

Everything that is not an expert (attention, norms, routers, embeddings) stays where it is and is moved to the
engine's device. Each MoE layer keeps `cache_size` experts on the device; the others wait in host memory.
"""

from __future__ import annotations

import time

import torch

from nbhelpers import checks
from nbhelpers.moe.offload import quant, support
from nbhelpers.moe.offload.cache import CacheStats, ExpertCache
from nbhelpers.moe.offload.experts import ExpertCodec, OffloadedExperts
from nbhelpers.moe.offload.prefetch import Prefetcher


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_options(cache_size, quantization, group_size, prefetch, device, num_experts=None):
    """Validate every option before any model work; returns (cache_size, device)."""
    checks.integer("cache_size", cache_size, minimum=1, maximum=num_experts)
    quant.check_scheme(quantization, group_size)
    checks.choice("prefetch", prefetch, (True, False))
    device = default_device() if device is None else str(device)
    if device.split(":")[0] not in ("cpu", "cuda") or (device.startswith("cuda") and not torch.cuda.is_available()):
        raise checks.ParameterError("device", device, "'cpu', or 'cuda' on a machine with a GPU")
    return cache_size, device


def offload_experts(model, cache_size: int = 2, quantization=None, group_size=None, prefetch: bool = True,
                    device=None, exclusive: bool = True, compile_dequant=None) -> "OffloadEngine":
    """Replace every MoE layer's experts with an offloaded, cached (and optionally quantized) version, in place."""
    support.check_supported(model)
    cache_size, device = check_options(cache_size, quantization, group_size, prefetch, device,
                                       support.expert_count(model.config))
    layers = support.moe_layers(model)
    if compile_dequant is None:
        compile_dequant = device.startswith("cuda")
    codec = ExpertCodec(quantization, group_size, compile_dequant=compile_dequant)
    sources = []
    for moe in layers:
        experts = moe.block.experts
        sources.append(([_encode(codec, experts, e, device) for e in range(experts.gate_up_proj.shape[0])],
                        experts.act_fn))
        moe.block.experts = None  # drop the full weights before the caches allocate theirs
    return OffloadEngine(model, layers, sources, codec, cache_size, device, prefetch, exclusive)


def _encode(codec, experts, expert: int, device) -> dict:
    """One expert's stored tensors; quantized on the engine's device (seconds on CPU, milliseconds on a GPU)."""
    if codec.quantization is None:
        return codec.encode(experts.gate_up_proj[expert], experts.down_proj[expert])
    parts = codec.encode(experts.gate_up_proj[expert].to(device), experts.down_proj[expert].to(device))
    return {name: tensor.cpu() for name, tensor in parts.items()}


class OffloadEngine:
    def __init__(self, model, layers, sources, codec, cache_size, device, prefetch, exclusive):
        self.model, self.layers, self.codec, self.device = model, layers, codec, torch.device(device)
        self.stats_ = CacheStats()
        self.caches = []
        for position, (moe, (experts, act_fn)) in enumerate(zip(layers, sources)):
            cache = ExpertCache(experts, cache_size, device, stats=self.stats_, layer=moe.index, exclusive=exclusive)
            counter = self._count_tokens if position == 0 else None
            moe.block.experts = OffloadedExperts(cache, codec, act_fn, len(experts), on_tokens=counter)
            self.caches.append(cache)
        del sources
        model.to(self.device)
        self.prefetcher = Prefetcher(layers, self.caches) if prefetch else None
        self.tokens = self.decode_tokens = 0
        self.seconds = self.decode_seconds = 0.0
        self._timer = [model.register_forward_pre_hook(self._start),
                       model.register_forward_hook(self._stop, with_kwargs=True)]
        self._started, self._forward_tokens = None, 0

    # -- timing and token counts ----------------------------------------------------------------------------
    def _count_tokens(self, n: int) -> None:
        self._forward_tokens += n

    def _start(self, module, args):
        self._sync()
        self._started, self._forward_tokens = time.perf_counter(), 0

    def _stop(self, module, args, kwargs, output):
        self._sync()
        elapsed = time.perf_counter() - self._started
        self.tokens += self._forward_tokens
        self.seconds += elapsed
        ids = kwargs.get("input_ids", args[0] if args else None)
        if torch.is_tensor(ids) and ids.dim() == 2 and ids.shape[1] == 1:  # one new token per sequence: decoding
            self.decode_tokens += self._forward_tokens
            self.decode_seconds += elapsed

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- reports --------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.stats_
        moved = s.bytes_h2d + s.bytes_d2h
        return {
            "hit_rate": round(s.hit_rate(), 4), "lookups": s.lookups, "hits": s.hits, "misses": s.misses,
            "prefetched": s.prefetched, "prefetch_used": s.prefetch_used,
            "prefetch_precision": round(s.prefetch_used / s.prefetched, 4) if s.prefetched else None,
            "bytes_h2d": s.bytes_h2d, "bytes_d2h": s.bytes_d2h,
            "bytes_moved_per_token": round(moved / self.tokens, 1) if self.tokens else 0.0,
            "tokens": self.tokens, "tokens_per_s": round(self.tokens / self.seconds, 3) if self.seconds else None,
            "decode_tokens_per_s": round(self.decode_tokens / self.decode_seconds, 3) if self.decode_seconds else None,
            "expert_bytes": self.caches[0].expert_bytes, "device_expert_bytes": self.device_bytes(),
            "host_expert_bytes": self.host_bytes(), **self.codec.describe(),
        }

    def reset_stats(self) -> None:
        fresh = CacheStats()
        for field in ("lookups", "hits", "misses", "prefetched", "prefetch_used", "bytes_h2d", "bytes_d2h"):
            setattr(self.stats_, field, getattr(fresh, field))
        self.stats_.evictions.clear()
        for cache in self.caches:
            cache.prefetched.clear()
        self.tokens = self.decode_tokens = 0
        self.seconds = self.decode_seconds = 0.0

    def device_bytes(self) -> int:
        return sum(cache.device_bytes() for cache in self.caches)

    def host_bytes(self) -> int:
        return sum(cache.host_bytes() for cache in self.caches)

    def resident(self) -> list[list[int]]:
        """Per MoE layer, the experts on the device, least recently used first."""
        return [cache.order() for cache in self.caches]

    def set_prefetch(self, enabled: bool) -> None:
        checks.choice("prefetch", enabled, (True, False))
        if self.prefetcher is not None and not enabled:
            self.prefetcher.remove()
            self.prefetcher = None
        elif self.prefetcher is None and enabled:
            self.prefetcher = Prefetcher(self.layers, self.caches)
