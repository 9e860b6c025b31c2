"""Routing capture on the supported architectures (tiny sizes, offline), its statistics and pictures."""

import pytest
import torch

from nbhelpers.checks import ParameterError
from nbhelpers.moe import capture_routing, same_first_expert_rate
from nbhelpers.moe.layouts import num_experts as layout_num_experts, routers
from nbhelpers.moe.routing import Routing, compare_prompts, plot_expert_heatmap, plot_expert_load


def _tiny_model(kind):
    from transformers import GraniteMoeConfig, GraniteMoeForCausalLM, OlmoeConfig, OlmoeForCausalLM

    torch.manual_seed(0)
    if kind == "granitemoe":
        config = GraniteMoeConfig(vocab_size=600, hidden_size=32, intermediate_size=16, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, num_local_experts=10,
                                  num_experts_per_tok=4, max_position_embeddings=64)
        return GraniteMoeForCausalLM(config).eval()
    config = OlmoeConfig(vocab_size=600, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_experts=6, num_experts_per_tok=2,
                         max_position_embeddings=64)
    return OlmoeForCausalLM(config).eval()


def test_capture_on_tiny_mixtral_matches_the_library_router(tiny_chat):
    model, tokenizer = tiny_chat
    routing = capture_routing(model, tokenizer, "The quick brown fox jumps over the lazy dog.")
    tokens = len(tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"])
    assert routing.experts.shape == (2, tokens, 2) and routing.num_experts == 8
    # The same logits transformers reports, and the same experts and weights its router hands to the experts.
    returned = []
    handle = model.model.layers[1].mlp.gate.register_forward_hook(lambda m, i, o: returned.append(o))
    out = model(input_ids=tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"],
                output_router_logits=True)
    handle.remove()
    assert torch.equal(returned[0][2], routing.experts[1])
    assert torch.allclose(returned[0][1].float(), routing.weights[1], atol=1e-6)
    for layer, logits in enumerate(out.router_logits):
        assert torch.allclose(logits.float(), routing.logits[layer], atol=1e-6)
    assert torch.allclose(routing.weights.sum(-1), torch.ones(2, tokens), atol=1e-6)
    assert torch.allclose(routing.load().sum(dim=1), torch.full((2,), 2.0))  # k picks per token


def _library_routing(model, ids):
    """The router logits transformers reports, and what the last layer's router returned (logits, weights, index).

    transformers 5.24 reports `router_logits` for every supported model and its routers return (logits, weights,
    index). Granite MoE in transformers 5.15 (Colab) reports none (None) and its router returns (index, weights,
    logits): there the logits are taken from each router's own return value.
    """
    returned = []
    handles = [r.register_forward_hook(lambda m, i, o: returned.append(o)) for r in routers(model)]
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_router_logits=True)
    finally:
        for handle in handles:
            handle.remove()
    if returned[-1][0].is_floating_point():
        ordered = returned
    else:  # the older Granite MoE order, recognised by its integer first tensor
        ordered = [(logits, weights, index) for index, weights, logits in returned]
        assert out.router_logits is None
    logits = out.router_logits if out.router_logits is not None else [o[0] for o in ordered]
    return logits, ordered[-1]


@pytest.mark.parametrize("kind", ["granitemoe", "olmoe"])
def test_capture_on_other_layouts(kind, tiny_chat):
    _, tokenizer = tiny_chat
    model = _tiny_model(kind)
    routing = capture_routing(model, tokenizer, "def add(a, b): return a + b")
    logits, (_, weights, index) = _library_routing(
        model, tokenizer("def add(a, b): return a + b", return_tensors="pt")["input_ids"])
    assert routing.layers == model.config.num_hidden_layers
    assert routing.experts.shape[-1] == model.config.num_experts_per_tok
    assert routing.num_experts == layout_num_experts(model.config)
    assert torch.allclose(logits[-1].float(), routing.logits[-1], atol=1e-6)
    assert torch.equal(index, routing.experts[-1])  # the experts the library's router hands to its experts
    assert torch.allclose(weights.float(), routing.weights[-1], atol=1e-6)
    if kind == "olmoe":  # norm_topk_prob is False for OLMoE: weights are raw probabilities
        assert (routing.weights.sum(-1) < 1).all()


def test_unsupported_architecture_and_bad_prompts_fail_clearly(tiny_chat):
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = tiny_chat
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=600, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ParameterError, match="'llama'.*mixtral"):
        capture_routing(dense, tokenizer, "hello")
    model, tokenizer = tiny_chat
    with pytest.raises(ParameterError, match="prompt"):
        capture_routing(model, tokenizer, "   ")
    with pytest.raises(ParameterError, match="at most 512 tokens"):
        capture_routing(model, tokenizer, "word " * 600)


def _routing(first_experts, num_experts=4):
    first = torch.tensor(first_experts)
    experts = torch.stack([first, (first + 1) % num_experts], dim=-1)
    layers, tokens = first.shape
    return Routing([f"t{i}" for i in range(tokens)], torch.zeros(layers, tokens, num_experts), experts,
                   torch.full((layers, tokens, 2), 0.5), num_experts, 2, "mixtral")


def test_same_first_expert_rate_counts_consecutive_pairs():
    routing = _routing([[0, 0, 0, 1, 1], [0, 1, 2, 3, 0]])
    rates = same_first_expert_rate(routing)
    assert rates["per_layer"] == [0.75, 0.0]
    assert rates["random_baseline"] == 0.25 and rates["pairs"] == 4
    both = same_first_expert_rate([routing, _routing([[2, 2], [1, 1]])])
    assert both["per_layer"] == [0.8, 0.2]  # pairs never cross prompts: (3+1)/5 and (0+1)/5
    with pytest.raises(ParameterError, match="layer"):
        same_first_expert_rate(routing, layer=5)


def test_pictures_are_written(tmp_path, tiny_chat):
    from nbhelpers.moe import save_figure

    model, tokenizer = tiny_chat
    routing = capture_routing(model, tokenizer, "Le renard brun saute.")
    for name, fig in {"heat": plot_expert_heatmap(routing), "load": plot_expert_load(routing)}.items():
        path = save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    rows = compare_prompts({"fr": routing})
    assert rows[0]["tokens"] == len(routing.tokens) and rows[0]["random"] == 0.125
