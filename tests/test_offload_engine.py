"""The offload engine against the unmodified model: equal logits without quantization, measured difference with;
prefetch correctness; stats; supported and refused architectures."""

import copy

import pytest
import torch

from nbhelpers.checks import ParameterError
from nbhelpers.moe.offload import offload_experts, prefetch


def _seeded(cls, config, seed=0):
    """A model with larger-than-default random weights, so routing and quantization errors are visible."""
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0, 0.2)
    return model


def _mixtral(experts=8, k=2, layers=3, seed=0):
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=experts,
                           num_experts_per_tok=k)
    return _seeded(MixtralForCausalLM, config, seed)


IDS = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("experts,k,cache_size,prefetch_on", [
    (8, 2, 1, False), (8, 2, 1, True), (8, 2, 3, True), (4, 1, 1, True), (6, 3, 6, False)])
def test_unquantized_engine_matches_model(experts, k, cache_size, prefetch_on):
    model = _mixtral(experts, k, seed=experts + k)
    reference = _logits(model)  # the library's default experts implementation (grouped_mm)
    eager = copy.deepcopy(model)
    eager.set_experts_implementation("eager")
    engine = offload_experts(model, cache_size=cache_size, prefetch=prefetch_on, device="cpu")
    got = _logits(model)
    assert (got - reference).abs().max().item() < 1e-5
    assert torch.equal(got, _logits(eager))  # the eager loop's math and summation order: bit for bit
    stats = engine.stats()
    assert stats["hits"] + stats["misses"] == stats["lookups"] > 0
    assert stats["tokens"] == IDS.numel()
    if cache_size == experts:
        assert stats["hit_rate"] == 1.0 and stats["bytes_moved_per_token"] == 0
    else:
        moved = stats["bytes_h2d"] + stats["bytes_d2h"]
        assert stats["bytes_moved_per_token"] == pytest.approx(moved / IDS.numel(), abs=0.1)
        assert stats["bytes_d2h"] == stats["bytes_h2d"]  # exclusive mode: every load is a swap


def test_generation_and_duplicated_host_copy():
    model = _mixtral()
    expected = copy.deepcopy(model).generate(IDS[:1], max_new_tokens=5, do_sample=False)
    engine = offload_experts(model, cache_size=1, exclusive=False, device="cpu")
    assert torch.equal(model.generate(IDS[:1], max_new_tokens=5, do_sample=False), expected)
    stats = engine.stats()
    assert stats["bytes_d2h"] == 0 and stats["bytes_h2d"] > 0 and stats["decode_tokens_per_s"] > 0


def test_quantized_difference_is_reported_and_ordered():
    model = _mixtral(experts=4, layers=1)
    reference = _logits(model)
    differences = {}
    for scheme in ("int8", "int4", "int3", "int2"):
        quantized = copy.deepcopy(model)
        engine = offload_experts(quantized, cache_size=2, quantization=scheme, device="cpu")
        differences[scheme] = (_logits(quantized) - reference).abs().max().item()
        assert engine.stats()["quantization"] == scheme
    assert 0 < differences["int8"] < differences["int4"] < differences["int3"] < differences["int2"], differences


def test_prefetch_guesses_are_the_next_router_on_the_current_input():
    model = _mixtral(seed=3)
    captured = {}
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda m, a, kw, i=i: captured.__setitem__(i, (a[0] if a else
                                        kw["hidden_states"]).clone()), with_kwargs=True)
    engine = offload_experts(model, cache_size=2, prefetch=True, device="cpu")
    _logits(model, IDS[:1, :1])
    layers = engine.layers
    assert [position for position, _ in engine.prefetcher.guesses] == [1, 2]
    for position, guess in engine.prefetcher.guesses:
        assert guess == prefetch.predict(layers[position], captured[position - 1], 2)
        assert len(guess) <= 2


def test_prefetch_is_exact_when_a_layer_adds_nothing():
    # layer 0 adds nothing to the residual stream and layer 1's attention adds nothing to its MoE input, so
    # router_1(norm_1(h_0)) is exactly layer 1's routing: every layer-1 lookup must hit a prefetched expert
    model = _mixtral(layers=2, seed=4)
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.experts.down_proj.zero_()
        model.model.layers[1].self_attn.o_proj.weight.zero_()
    engine = offload_experts(model, cache_size=2, prefetch=True, device="cpu")
    layer1_hits = []
    for token in range(5):
        cache = engine.caches[1]
        guessed = {}
        original_lookup = cache.lookup
        cache.lookup = lambda experts: guessed.setdefault("needed", experts) and original_lookup(experts)
        _logits(model, IDS[:1, token:token + 1])
        cache.lookup = original_lookup
        guess = dict(engine.prefetcher.guesses)[1]
        assert sorted(guess) == guessed["needed"]
        layer1_hits.append(set(guessed["needed"]) <= set(cache.order()))
    assert all(layer1_hits)
    stats = engine.stats()
    assert stats["prefetched"] > 0 and stats["prefetch_used"] == stats["prefetched"]


def test_prefetch_does_not_change_outputs_and_can_be_switched():
    model = _mixtral(seed=5)
    reference = _logits(model)
    engine = offload_experts(model, cache_size=1, prefetch=True, device="cpu")
    assert (_logits(model) - reference).abs().max().item() < 1e-5
    engine.set_prefetch(False)
    engine.reset_stats()
    assert (_logits(model) - reference).abs().max().item() < 1e-5
    assert engine.stats()["prefetched"] == 0 and engine.stats()["lookups"] > 0


def _tiny(kind):
    import transformers

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, num_experts_per_tok=2)
    if kind == "olmoe":
        config = transformers.OlmoeConfig(num_experts=6, **common)
        cls = transformers.OlmoeForCausalLM
    elif kind == "qwen2_moe":
        config = transformers.Qwen2MoeConfig(num_experts=6, moe_intermediate_size=24, shared_expert_intermediate_size=40,
                                             mlp_only_layers=[0], **common)
        cls = transformers.Qwen2MoeForCausalLM
    elif kind == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(num_experts=6, moe_intermediate_size=24, head_dim=8, **common)
        cls = transformers.Qwen3MoeForCausalLM
    else:
        config = transformers.GraniteMoeConfig(num_local_experts=6, **common)
        cls = transformers.GraniteMoeForCausalLM
    return _seeded(cls, config)


@pytest.mark.parametrize("kind", ["olmoe", "qwen2_moe", "qwen3_moe", "granitemoe"])
def test_other_fused_architectures(kind):
    model = _tiny(kind)
    reference = _logits(model)
    engine = offload_experts(model, cache_size=2, prefetch=True, device="cpu")
    assert (_logits(model) - reference).abs().max().item() < 1e-5
    expected_layers = 1 if kind == "qwen2_moe" else 2  # qwen2_moe: layer 0 is dense (mlp_only_layers)
    assert len(engine.caches) == expected_layers


def test_refuses_other_architectures_and_bad_options():
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ParameterError, match="mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe"):
        offload_experts(dense)
    model = _mixtral(layers=1)
    for options, name in [({"cache_size": 0}, "cache_size"), ({"cache_size": 9}, "cache_size"),
                          ({"quantization": "nf4"}, "quantization"), ({"device": "tpu"}, "device"),
                          ({"prefetch": "yes"}, "prefetch")]:
        with pytest.raises(ParameterError, match=name):
            offload_experts(model, **options)
    assert model.model.layers[0].mlp.experts.gate_up_proj is not None  # refused before touching the model
    offload_experts(model, cache_size=1, device="cpu")
    with pytest.raises(ParameterError, match="offloaded already"):
        offload_experts(model, cache_size=1, device="cpu")
