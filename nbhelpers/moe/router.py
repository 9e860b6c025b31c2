"""A sparse MoE block, written out by hand.

For every token x (a row of hidden size H) and E experts:

    logits  = x @ W_router.T                     (E numbers: how much the router likes each expert)
    probs   = softmax(logits)                    (in float32, as the library does)
    w, idx  = top_k(probs, k)                    (keep the k best experts: Mixtral k=2 of E=8)
    w       = w / sum(w)                         (renormalise so the k weights sum to 1)
    y       = sum_j w_j * expert_idx_j(x)        (only k experts run: that is the sparsity)

and every expert is a SwiGLU MLP:  expert(x) = W_down @ (silu(W_gate @ x) * (W_up @ x)).
`sparse_moe_forward` reproduces the output of the transformers block to about 1e-6 in float32.
"""

from __future__ import annotations

from nbhelpers import checks
from nbhelpers.moe.layouts import block_parts


def route(router_logits, top_k: int, renormalize: bool = True):
    """(weights, experts): the top-k softmax probabilities of each row and the experts they belong to."""
    import torch

    num_experts = router_logits.shape[-1]
    checks.integer("top_k", top_k, minimum=1, maximum=num_experts)
    finite(router_logits, "router_logits")
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def finite(tensor, name: str):
    """Refuse NaN or infinite values: softmax would turn them into NaN weights and top-k into arbitrary experts,
    silently. Usually a sign of a diverged model or fp16 overflow upstream."""
    import torch

    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise checks.ParameterError(name, f"tensor of shape {tuple(tensor.shape)}", f"finite numbers; {bad} values "
                                    "are NaN or infinite (a diverged model, or fp16 overflow: try float32 or bf16)")
    return tensor


def sparse_moe_forward(moe_block, hidden_states, top_k: int | None = None):
    """The output of `moe_block` for `hidden_states` (batch, seq, H), computed step by step.

    `top_k=None` uses the block's own k; another value shows what happens with more or fewer experts per token
    (it must be between 1 and the number of experts).
    """
    import torch
    import torch.nn.functional as F

    router_weight, gate_up, down, act, block_k, renormalize = block_parts(moe_block)
    num_experts = router_weight.shape[0]
    k = block_k if top_k is None else checks.integer("top_k", top_k, minimum=1, maximum=num_experts)

    if hidden_states.dim() != 3 or hidden_states.shape[-1] != router_weight.shape[1]:
        raise checks.ParameterError("hidden_states", f"tensor of shape {tuple(hidden_states.shape)}",
                                    f"(batch, seq, {router_weight.shape[1]}): the block's hidden size is "
                                    f"{router_weight.shape[1]}")
    finite(hidden_states, "hidden_states")
    batch, seq, hidden = hidden_states.shape
    x = hidden_states.reshape(-1, hidden)                       # one row per token
    logits = F.linear(x, router_weight)                         # (tokens, E)
    weights, experts = route(logits, k, renormalize)            # (tokens, k) each
    weights = weights.to(x.dtype)

    out = torch.zeros_like(x)
    for e in range(num_experts):
        token_idx, slot = torch.where(experts == e)             # the tokens that picked expert e, and in which slot
        if token_idx.numel() == 0:
            continue                                            # an expert nobody picked costs nothing
        gate, up = F.linear(x[token_idx], gate_up[e]).chunk(2, dim=-1)
        y = F.linear(act(gate) * up, down[e])                   # SwiGLU expert
        out.index_add_(0, token_idx, y * weights[token_idx, slot, None])
    return out.reshape(batch, seq, hidden)


def random_mixtral_block(num_experts: int = 8, top_k: int = 2, hidden: int = 64, intermediate: int = 128,
                         seed: int = 0):
    """A transformers MixtralSparseMoeBlock with seeded random weights, to compare against."""
    import torch
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    checks.integer("top_k", top_k, minimum=1, maximum=num_experts)
    config = MixtralConfig(hidden_size=hidden, intermediate_size=intermediate, num_local_experts=num_experts,
                           num_experts_per_tok=top_k)
    config._experts_implementation = "eager"  # a standalone block has no model to pick the implementation
    block = MixtralSparseMoeBlock(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return block


def equivalence_table(cases=((8, 2), (4, 1), (16, 4), (8, 8)), tokens: int = 32, seed: int = 0) -> list[dict]:
    """Max difference between `sparse_moe_forward` and the library block for each (experts, top_k)."""
    import torch

    rows = []
    for num_experts, k in cases:
        block = random_mixtral_block(num_experts, k, seed=seed)
        x = torch.randn(1, tokens, block.gate.hidden_dim, generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            error = (block(x) - sparse_moe_forward(block, x)).abs().max().item()
        rows.append({"experts": num_experts, "top_k": k, "max abs difference": f"{error:.1e}", "ok": error < 1e-5})
    return rows
