"""Where an MoE model keeps its router and its experts, per architecture.

transformers 5 stores the experts of Mixtral, Granite MoE and OLMoE the same way ("fused"): one tensor
`experts.gate_up_proj` (E, 2I, H) with the gate rows first, and one `experts.down_proj` (E, H, I). What differs is
the attribute names and one routing detail:

| model_type | MoE block per layer      | router                     | top-k weights renormalised? |
|------------|--------------------------|----------------------------|-----------------------------|
| mixtral    | layers[i].mlp            | mlp.gate                   | yes                         |
| granitemoe | layers[i].block_sparse_moe | block_sparse_moe.router  | yes (softmax over the top-k logits: the same) |
| olmoe      | layers[i].mlp            | mlp.gate                   | config.norm_topk_prob (False for OLMoE-1B-7B) |

Every router returns three tensors: its logits (tokens, E), the top-k weights and the top-k expert indices, in that
order in transformers 5.24. Granite MoE's router in transformers 5.15 (the version Colab ships) returns them reversed,
`(top_k_index, top_k_weights, router_logits)`, and that model does not report `router_logits`.
`split_router_output` reads either order from the tensors themselves (the index is the integer one).

A new architecture (for example the lab MoE a later notebook trains) joins with `register_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbhelpers.checks import ParameterError


@dataclass(frozen=True)
class MoeLayout:
    block: str  # attribute of a decoder layer holding the MoE block
    router: str  # attribute of the block holding the router (`split_router_output` reads what it returns)
    renormalize: bool | str = True  # True/False, or the name of a config flag that decides
    experts_key: str = "num_local_experts"  # config field with the expert count


LAYOUTS = {
    "mixtral": MoeLayout(block="mlp", router="gate"),
    "granitemoe": MoeLayout(block="block_sparse_moe", router="router"),
    "olmoe": MoeLayout(block="mlp", router="gate", renormalize="norm_topk_prob", experts_key="num_experts"),
}
SUPPORTED = tuple(LAYOUTS)


def register_layout(model_type: str, layout: MoeLayout) -> None:
    LAYOUTS[model_type] = layout


def model_type_of(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", type(model_or_config).__name__)


def layout_of(model_or_config) -> MoeLayout:
    """The layout of a model (or config); a clear error for an architecture routing capture does not know."""
    model_type = model_type_of(model_or_config)
    if model_type not in LAYOUTS:
        raise ParameterError("model architecture", model_type,
                             "routing capture supports " + ", ".join(sorted(LAYOUTS))
                             + " (add one with register_layout)")
    return LAYOUTS[model_type]


def renormalizes(layout: MoeLayout, config) -> bool:
    if isinstance(layout.renormalize, str):
        return bool(getattr(config, layout.renormalize, False))
    return layout.renormalize


def num_experts(config) -> int:
    return int(getattr(config, layout_of(config).experts_key))


def top_k(config) -> int:
    return int(config.num_experts_per_tok)


def decoder_layers(model):
    inner = getattr(model, "model", model)
    return list(inner.layers)


def moe_blocks(model) -> list:
    """The MoE block of every decoder layer, in order."""
    layout = layout_of(model)
    return [getattr(layer, layout.block) for layer in decoder_layers(model)]


def routers(model) -> list:
    layout = layout_of(model)
    return [getattr(block, layout.router) for block in moe_blocks(model)]


def split_router_output(output):
    """(logits, top_k_weights, top_k_index) from what a router returned, in whichever order it returned them.

    A plain linear gate returns the logits alone (weights and index are then None). A three-tensor router whose
    first tensor holds integers is the older Granite MoE order (index, weights, logits).
    """
    if not isinstance(output, (tuple, list)):
        return output, None, None
    if len(output) == 3 and not output[0].is_floating_point():
        output = tuple(reversed(output))
    logits = output[0]
    return logits, (output[1] if len(output) > 1 else None), (output[2] if len(output) > 2 else None)


def block_parts(block):
    """(router weight (E, H), gate_up (E, 2I, H), down (E, H, I), activation, top_k, renormalise) of one MoE block.

    Reads the fused layout of transformers 5, and the older names (router.layer, input_linear/output_linear) that
    Granite MoE used before.
    """
    router = getattr(block, "gate", None) or getattr(block, "router", None)
    if router is None:
        raise ParameterError("moe_block", type(block).__name__, "an MoE block with a `gate` or `router` module")
    router_weight = router.weight if hasattr(router, "weight") else router.layer.weight
    experts = block.experts if hasattr(block, "experts") else block
    gate_up = experts.gate_up_proj if hasattr(experts, "gate_up_proj") else block.input_linear.weight
    down = experts.down_proj if hasattr(experts, "down_proj") else block.output_linear.weight
    act = getattr(experts, "act_fn", None) or block.activation
    k = getattr(router, "top_k", None) or getattr(block, "top_k", None)
    renorm = getattr(router, "norm_topk_prob", True)  # only OLMoE's router carries the flag
    return router_weight, gate_up, down, act, int(k), bool(renorm)
