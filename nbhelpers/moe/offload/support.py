"""Which transformers 5 MoE architectures the offload engine handles, and where their parts are.

The engine needs the "fused" experts layout: one module per layer with `gate_up_proj` (E, 2I, H), gate rows
first, and `down_proj` (E, H, I), no biases, called as `experts(hidden, top_k_index, top_k_weights)`. Read in the
installed transformers 5 source:

| model_type  | MoE block            | router | experts layout | notes                                               |
|-------------|----------------------|--------|----------------|-----------------------------------------------------|
| mixtral     | layers[i].mlp        | gate   | fused          | Mixtral-8x7B / 8x22B                                |
| olmoe       | layers[i].mlp        | gate   | fused          | router renormalises only if norm_topk_prob          |
| qwen2_moe   | layers[i].mlp        | gate   | fused          | + a shared expert, kept on the device as is; dense  |
|             |                      |        |                | layers (mlp_only_layers) are left alone             |
| qwen3_moe   | layers[i].mlp        | gate   | fused          | dense layers left alone, as for qwen2_moe           |
| granitemoe  | layers[i].block_sparse_moe | router | fused    | softmax over the top-k logits                       |

Granite MoE's router returns `(top_k_index, top_k_weights, logits)` in transformers 5.15 (Colab) and
`(logits, top_k_weights, top_k_index)` in 5.24; its experts are the same fused module in both. `MoeLayer.router`
hands back the 5.24 order in either version.

Refused: GPT-OSS (transposed, interleaved, with biases), DeepSeek-V3 and other grouped/sigmoid routers, Jamba,
PhiMoE and anything else: not tested here, so the engine says so instead of silently computing something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbhelpers.checks import ParameterError
from nbhelpers.moe.layouts import split_router_output

if TYPE_CHECKING:  # annotations only: `expert_count` serves the budgets, which must not import torch
    from torch import nn

BLOCKS = {"mixtral": ("mlp", "gate"), "olmoe": ("mlp", "gate"), "qwen2_moe": ("mlp", "gate"),
          "qwen3_moe": ("mlp", "gate"), "granitemoe": ("block_sparse_moe", "router")}
SUPPORTED = tuple(BLOCKS)


class OrderedRouter:
    """Calls a router and returns (logits, top_k_weights, top_k_index), whatever order the library uses."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, hidden_states):
        return split_router_output(self.module(hidden_states))


@dataclass
class MoeLayer:
    index: int  # decoder layer number
    layer: nn.Module  # the decoder layer
    block: nn.Module  # its MoE block
    router: OrderedRouter  # returns (logits, top_k_weights, top_k_index)
    norm: nn.Module | None  # the norm in front of the MoE block (used to guess this layer's routing early)


def expert_count(config) -> int:
    """Experts per MoE layer, from a config object or a config.json dict (Mixtral and Granite call the field
    `num_local_experts`, OLMoE and Qwen `num_experts`)."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    return int(get("num_local_experts") or get("num_experts"))


def model_type(model) -> str:
    return getattr(getattr(model, "config", None), "model_type", type(model).__name__)


def check_supported(model) -> str:
    """The model's type if the engine supports it, else a ParameterError naming the supported ones."""
    kind = model_type(model)
    if kind not in BLOCKS:
        raise ParameterError("model architecture", kind,
                             "expert offloading supports the fused-experts MoE models " + ", ".join(SUPPORTED))
    return kind


def moe_layers(model) -> list[MoeLayer]:
    """The MoE layers of a supported model, in order; dense layers are skipped."""
    kind = check_supported(model)
    block_name, router_name = BLOCKS[kind]
    inner = getattr(model, "model", model)
    found = []
    for index, layer in enumerate(inner.layers):
        block = getattr(layer, block_name, None)
        if block is None or not hasattr(block, "experts"):
            continue
        check_experts(block.experts, kind)
        found.append(MoeLayer(index, layer, block, OrderedRouter(getattr(block, router_name)),
                              getattr(layer, "post_attention_layernorm", None)))
    if not found:
        raise ParameterError("model", kind, "a model with at least one MoE layer")
    return found


def check_experts(experts: nn.Module, kind: str = "") -> None:
    """Refuse an experts module whose weights are not in the fused (gate;up, down) layout without biases."""
    from nbhelpers.moe.offload.experts import OffloadedExperts

    if isinstance(experts, OffloadedExperts):
        raise ParameterError("model", kind, "a model whose experts are not offloaded already")
    fused = (getattr(experts, "gate_up_proj", None) is not None and getattr(experts, "down_proj", None) is not None
             and experts.gate_up_proj.dim() == 3 and experts.down_proj.dim() == 3
             and experts.gate_up_proj.shape[1] == 2 * experts.down_proj.shape[2]
             and experts.gate_up_proj.shape[2] == experts.down_proj.shape[1])
    flags = (getattr(experts, "has_gate", True), getattr(experts, "has_bias", False),
             getattr(experts, "is_transposed", False), getattr(experts, "is_concatenated", True),
             getattr(experts, "has_post_expert_norm", False))
    if not fused or flags != (True, False, False, True, False):
        raise ParameterError("experts layout", type(experts).__name__,
                             "fused gate_up_proj (E, 2I, H) and down_proj (E, H, I) without biases")
