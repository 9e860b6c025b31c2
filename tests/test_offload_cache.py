"""The expert cache and the quantizer on their own: LRU order, swaps, byte accounting, pack/unpack, error levels."""

import pytest
import torch

from nbhelpers.checks import ParameterError
from nbhelpers.moe.offload import quant
from nbhelpers.moe.offload.cache import CacheStats, ExpertCache


def _experts(count=6):
    # expert e is filled with the value e, so a buffer's content says which expert it holds
    return [{"a": torch.full((4, 3), float(e)), "b": torch.full((5,), float(e))} for e in range(count)]


def _content(cache, expert):
    return int(cache.weights(expert)["a"][0, 0].item())


@pytest.mark.parametrize("exclusive", [True, False])
def test_lru_order_eviction_and_bytes(exclusive):
    stats = CacheStats()
    cache = ExpertCache(_experts(), capacity=2, device="cpu", stats=stats, exclusive=exclusive)
    assert cache.order() == [0, 1] and stats.bytes_setup == 2 * cache.expert_bytes
    assert cache.lookup([0]) == ([0], [])  # 0 becomes most recent: order [1, 0]
    assert cache.order() == [1, 0]
    hits, misses = cache.lookup([3, 0])
    assert (hits, misses) == ([0], [3])
    cache.load(3)  # evicts 1, the least recently used
    assert cache.order() == [0, 3] and stats.evictions == [(0, 1)]
    cache.load(4, protect={0})  # 0 is protected, so 3 goes although it is more recent
    assert cache.order() == [0, 4] and stats.evictions[-1] == (0, 3)
    for expert in cache.order():
        assert _content(cache, expert) == expert
    cache.load(1)  # an expert evicted earlier comes back with the right weights
    assert _content(cache, 1) == 1
    per_copy = cache.expert_bytes
    assert stats.bytes_h2d == 3 * per_copy
    assert stats.bytes_d2h == (3 * per_copy if exclusive else 0)
    assert (stats.lookups, stats.hits, stats.misses) == (3, 2, 1)
    held = len(cache.host) + len(cache.resident)
    assert held == (6 if exclusive else 8)  # exclusive: every expert in exactly one place
    if exclusive:
        assert not set(cache.host) & set(cache.resident)
        assert all(int(t["a"][0, 0]) == e for e, t in cache.host.items())


def test_all_protected_means_no_load_and_full_cache_moves_nothing():
    stats = CacheStats()
    cache = ExpertCache(_experts(4), capacity=1, device="cpu", stats=stats)
    assert not cache.load(2, protect={0})
    full = ExpertCache(_experts(4), capacity=4, device="cpu", stats=CacheStats())
    assert full.spare is None and full.host == {} and full.lookup([0, 1, 2, 3]) == ([0, 1, 2, 3], [])


def test_prefetch_accounting():
    stats = CacheStats()
    cache = ExpertCache(_experts(), capacity=2, device="cpu", stats=stats)
    cache.load(4, prefetch=True)
    cache.load(5, prefetch=True, protect={4})
    assert stats.prefetched == 2 and cache.order() == [4, 5]
    assert cache.lookup([4, 0]) == ([4], [0])
    assert stats.prefetch_used == 1 and cache.prefetched == {5}


@pytest.mark.parametrize("scheme", ["int2", "int3", "int4", "int8"])
def test_hqq_round_trip_keeps_exact_levels(scheme):
    # a weight that is already on the grid of each group comes back exactly: packing and layout are lossless
    bits = quant.BITS[scheme]
    levels = torch.randint(0, 2**bits, (24, 64), generator=torch.Generator().manual_seed(bits)).float()
    levels[:, 0], levels[:, 1] = 0, 2**bits - 1  # every group spans the full range, so min/max finds the grid
    weight = (levels - 3) * 0.01
    parts = quant.quantize(weight, scheme, group_size=64, optimize=False)
    restored = quant.dequantize(parts, scheme, torch.float32)
    assert restored.shape == weight.shape
    assert (restored - weight).abs().max() < 0.01 / 5  # within a fifth of a level: float16 scale rounding only


def test_quantization_error_levels_and_sizes():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    errors = {s: quant.weight_error(weight, s)["relative_rms"] for s in ("int8", "int4", "int3", "int2")}
    assert errors["int8"] < 0.01 < errors["int4"] < 0.1 < errors["int3"] < 0.2 < errors["int2"] < 0.5
    plain = quant.weight_error(weight, "int2", optimize=False)["relative_rms"]
    assert errors["int2"] < plain  # HQQ's zero-point fit is why we use it at 2 bits
    assert quant.bits_per_weight("int2") == 2.5 and quant.bits_per_weight("int4") == 4.5
    assert quant.bits_per_weight("int3") == pytest.approx(3.7)
    parts = quant.quantize(weight, "int4", 64)
    assert parts["q"].dtype == torch.uint8 and parts["q"].numel() == weight.numel() // 2
    assert parts["scale"].shape == parts["zero"].shape == (64, 4) and parts["scale"].dtype == torch.float16


def test_bad_quantization_options():
    with pytest.raises(ParameterError, match="quantization"):
        quant.check_scheme("int5")
    with pytest.raises(ParameterError, match="group_size"):
        quant.check_scheme("int4", 7)
    with pytest.raises(ParameterError, match="group_size.*multiple of 4 groups"):
        quant.quantize(torch.randn(3, 64), "int2", 64)  # three groups cannot fill 2-bit bytes


def test_codec_falls_back_to_eager_dequantization():
    from nbhelpers.moe.offload.experts import ExpertCodec

    codec = ExpertCodec("int4")
    gate_up, down = torch.randn(16, 8), torch.randn(8, 8)
    parts = codec.encode(gate_up, down)
    expected = codec.decode(parts, torch.float32)

    def broken(*args):
        raise RuntimeError("no compiler")

    codec._compiled = broken
    got = codec.decode(parts, torch.float32)
    assert codec._compiled is None and all(torch.equal(a, b) for a, b in zip(got, expected))
