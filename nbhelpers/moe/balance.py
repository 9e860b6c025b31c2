"""The load-balancing loss: the penalty that keeps a router from sending every token to the same experts.

Switch Transformer's auxiliary loss, as transformers computes it for Mixtral. Over all tokens of all layers:

    f_i = share of the top-k picks that went to expert i        (how busy the expert was; sums to k)
    P_i = mean router probability of expert i                   (how much the router wanted it; sums to 1)
    loss = E * sum_i f_i * P_i

A perfectly even router gives f_i = k/E and P_i = 1/E, so loss = k; a collapsed one that sends every token to
the same k experts, with all its probability on them, gives E. Training adds it times
router_aux_loss_coef (0.02 for Mixtral) to the language-model loss.
"""

from __future__ import annotations

from nbhelpers import checks
from nbhelpers.moe.router import finite


def load_balancing_loss(router_logits, num_experts: int, top_k: int, attention_mask=None):
    """The auxiliary loss from a tuple of per-layer (tokens, E) router logits (or one (layers, tokens, E) tensor).

    `attention_mask` (batch, seq) leaves padding out, as in transformers.
    """
    import torch

    checks.integer("top_k", top_k, minimum=1, maximum=num_experts)
    logits = torch.cat([layer.float() for layer in router_logits], dim=0)  # all layers' tokens together
    finite(logits, "router_logits")
    if logits.shape[-1] != num_experts:
        raise checks.ParameterError("num_experts", num_experts, f"the router logits have {logits.shape[-1]} experts")
    probs = torch.softmax(logits, dim=-1)
    picks = torch.zeros_like(probs).scatter_(1, torch.topk(probs, top_k, dim=-1).indices, 1.0)
    if attention_mask is None:
        mask = torch.ones(len(probs), 1)
    else:  # the same flat mask for every layer
        if attention_mask.numel() == 0 or len(probs) % attention_mask.numel():
            raise checks.ParameterError("attention_mask", f"tensor of shape {tuple(attention_mask.shape)}",
                                        f"one entry per token of each layer; the logits hold {len(probs)} rows")
        if not attention_mask.bool().any():
            raise checks.ParameterError("attention_mask", "all zeros", "at least one real token (a 1): with every "
                                        "token masked out the loss is 0/0")
        layers = len(probs) // attention_mask.numel()
        mask = attention_mask.reshape(-1).float().repeat(layers)[:, None]
    mask = mask.to(probs.device)
    f = (picks * mask).sum(dim=0) / mask.sum()
    p = (probs * mask).sum(dim=0) / mask.sum()
    return num_experts * torch.sum(f * p)


def balanced_logits(tokens: int, num_experts: int, layers: int = 1, seed: int = 0):
    """Router logits that spread tokens evenly: token t prefers experts t, t+1, ... in turn (mild preferences)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(layers):
        logits = 0.1 * torch.randn(tokens, num_experts, generator=generator)
        logits[torch.arange(tokens), torch.arange(tokens) % num_experts] += 0.5
        out.append(logits)
    return tuple(out)


def collapsed_logits(tokens: int, num_experts: int, layers: int = 1, seed: int = 0, favourites: int = 2):
    """Router logits of a collapsed router: every token strongly prefers the same `favourites` experts."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(layers):
        logits = 0.1 * torch.randn(tokens, num_experts, generator=generator)
        logits[:, :favourites] += 8.0
        out.append(logits)
    return tuple(out)
