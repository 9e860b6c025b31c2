"""Parameter counts by arithmetic on the config, as a learner would do them on paper.

They check the meta-device counts from an independent direction: if a config field is misread, the two disagree.
Covered: Mixtral-style MoE decoders (Mixtral, GraniteMoE, OLMoE), CLIP text encoders and the T5 encoder. UNets, VAEs and
DiTs are counted on the meta device only (their arithmetic is long; the tests pin them to published totals).
"""

from __future__ import annotations


def moe_decoder(c: dict) -> int:
    """Embeddings + per layer (attention, router, E experts of 3 matrices, 2 RMSNorms) + final norm + LM head."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    e = c.get("num_local_experts") or c["num_experts"]  # OLMoE names it num_experts
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    attention = h * h * 2 + h * kv * 2  # q and o are h x h; k and v are h x kv (grouped-query attention)
    experts = e * 3 * h * i  # gate, up (fused as gate_up) and down projections
    layer = attention + e * h + experts + 2 * h
    if c.get("model_type") == "olmoe":
        layer += h + kv  # OLMoE normalises queries and keys (RMSNorm over the q and k projections)
    head = 0 if c.get("tie_word_embeddings") else v * h
    return v * h + c["num_hidden_layers"] * layer + h + head


def moe_experts(c: dict) -> int:
    return c["num_hidden_layers"] * c["num_local_experts"] * 3 * c["hidden_size"] * c["intermediate_size"]


def clip_text(c: dict, projection: bool) -> int:
    """Token and position embeddings + layers (4 biased projections, 2-layer MLP, 2 LayerNorms) + final LayerNorm."""
    h, i = c["hidden_size"], c["intermediate_size"]
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    total = c["vocab_size"] * h + c["max_position_embeddings"] * h + c["num_hidden_layers"] * layer + 2 * h
    return total + (h * c["projection_dim"] if projection else 0)


def t5_encoder(c: dict) -> int:
    """Shared embedding + layers (4 bias-free attention projections, gated MLP, 2 RMS norms) + relative position
    bias (first layer only) + final norm."""
    d, f, inner = c["d_model"], c["d_ff"], c["num_heads"] * c["d_kv"]
    mlp = (3 if c.get("feed_forward_proj", "").startswith("gated") else 2) * d * f
    layer = 4 * d * inner + mlp + 2 * d
    return c["vocab_size"] * d + c["num_layers"] * layer + c["relative_attention_num_buckets"] * c["num_heads"] + d


def count(class_name: str, config: dict) -> int | None:
    """The arithmetic count for a component class, or None where only the meta device counts it."""
    if class_name in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        return clip_text(config, projection=class_name.endswith("WithProjection"))
    if class_name == "T5EncoderModel":
        return t5_encoder(config)
    if class_name in ("MixtralForCausalLM", "GraniteMoeForCausalLM", "OlmoeForCausalLM"):
        return moe_decoder(config)
    return None
