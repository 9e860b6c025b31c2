"""sparse_moe_forward against the transformers MoE blocks, and the load-balancing loss against transformers'."""

import pytest
import torch

from nbhelpers.checks import ParameterError
from nbhelpers.moe import (balanced_logits, collapsed_logits, load_balancing_loss, route, sparse_moe_forward)


def _randomise(block, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return block.eval()


def _mixtral_block(experts, k, seed=0):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = MixtralConfig(hidden_size=32, intermediate_size=48, num_local_experts=experts, num_experts_per_tok=k)
    config._experts_implementation = "eager"
    return _randomise(MixtralSparseMoeBlock(config), seed)


@pytest.mark.parametrize("experts,k", [(8, 2), (4, 1), (16, 4), (6, 3), (8, 8)])
def test_matches_mixtral_block(experts, k):
    block = _mixtral_block(experts, k, seed=experts * 10 + k)
    x = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = (block(x) - sparse_moe_forward(block, x)).abs().max().item()
    assert error < 1e-5


def test_matches_granite_and_olmoe_blocks():
    from transformers import GraniteMoeConfig, OlmoeConfig
    from transformers.models.granitemoe.modeling_granitemoe import GraniteMoeMoE
    from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock

    blocks = [GraniteMoeMoE(GraniteMoeConfig(hidden_size=32, intermediate_size=48, num_local_experts=10,
                                             num_experts_per_tok=4))]
    for norm in (False, True):
        blocks.append(OlmoeSparseMoeBlock(OlmoeConfig(hidden_size=32, intermediate_size=48, num_experts=6,
                                                      num_experts_per_tok=3, norm_topk_prob=norm)))
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    for seed, block in enumerate(blocks):
        _randomise(block, seed)
        with torch.no_grad():
            assert (block(x) - sparse_moe_forward(block, x)).abs().max().item() < 1e-5


def test_top_k_changes_the_output_and_is_checked():
    block = _mixtral_block(8, 2)
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        assert not torch.allclose(sparse_moe_forward(block, x, top_k=1), sparse_moe_forward(block, x))
    with pytest.raises(ParameterError, match=r"top_k=9 .*from 1 to 8"):
        sparse_moe_forward(block, x, top_k=9)


def test_route_renormalises_to_one_and_picks_the_largest():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    weights, experts = route(logits, 2)
    assert experts.tolist() == [[1, 3]]
    assert weights.sum().item() == pytest.approx(1.0)
    unnormalised, _ = route(logits, 2, renormalize=False)
    assert unnormalised.sum().item() < 1.0
    with pytest.raises(ParameterError, match="top_k"):
        route(logits, 5)


@pytest.mark.parametrize("make", [balanced_logits, collapsed_logits, None])
def test_load_balancing_loss_equals_transformers(make):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = make(40, 8, layers=3) if make else tuple(torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(3)))
    ours = load_balancing_loss(logits, 8, 2)
    theirs = load_balancing_loss_func(logits, 8, 2)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_load_balancing_loss_with_padding_equals_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 0, 1, 1]])
    logits = tuple(torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(4)))
    assert load_balancing_loss(logits, 8, 2, mask).item() == pytest.approx(
        load_balancing_loss_func(logits, 8, 2, mask).item(), abs=1e-6)


def test_balanced_routing_costs_less_than_collapsed():
    balanced = load_balancing_loss(balanced_logits(64, 8, layers=2), 8, 2).item()
    collapsed = load_balancing_loss(collapsed_logits(64, 8, layers=2), 8, 2).item()
    assert balanced == pytest.approx(2.0, abs=0.15)  # k when perfectly even
    assert collapsed == pytest.approx(8.0, abs=0.1)  # E when every token goes to the same two experts
