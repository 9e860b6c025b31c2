"""Long context: how many tokens of KV cache fit on a GPU, and a needle-in-a-haystack test.

Every generated or prompt token leaves a key and a value vector in every layer, for every KV head:

    bytes per token = 2 (K and V) x layers x kv_heads x head_dim x bytes per number

Mixtral: 2 x 32 x 8 x 128 x 2 bytes = 128 KiB per token, so 32,768 tokens take 4.29 GB in fp16. Grouped-query
attention (8 KV heads for 32 query heads) is what keeps this 4x smaller than it would be.
"""

from __future__ import annotations

import random

from nbhelpers import checks
from nbhelpers.moe.accounting import DTYPE_BYTES, GB, RESERVE_GB, memory_plan


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def kv_cache_bytes(config, tokens: int, dtype: str = "float16", batch: int = 1) -> int:
    checks.integer("tokens", tokens, minimum=0)
    checks.choice("dtype", dtype, DTYPE_BYTES)
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim(config) * DTYPE_BYTES[dtype]
    return int(per_token * tokens * batch)


def kv_plan(config, dtype: str = "float16", gpu_gb: float | None = None, context_tokens: int | None = None) -> dict:
    """Weights in `dtype`, KV cache per token and the number of KV tokens that fit beside the weights on the GPU.

    `gpu_gb` None uses the GPU of this machine (no GPU: the plan says so and fits is None). Quantized weights
    (int8, int4) still keep a 16-bit KV cache: quantization shrinks the weights, not the cache.
    """
    plan = memory_plan(config, dtype, gpu_gb)
    max_positions = int(getattr(config, "max_position_embeddings", 0)) or None
    cache_dtype = dtype if dtype in ("float32", "bfloat16", "float16") else "float16"
    plan["kv_dtype"] = cache_dtype
    per_token = kv_cache_bytes(config, 1, cache_dtype)
    plan.update({"kv_bytes_per_token": per_token, "max_positions": max_positions, "reserve_gb": RESERVE_GB})
    if max_positions:
        plan["kv_gb_at_max_positions"] = round(kv_cache_bytes(config, max_positions, cache_dtype) / GB, 2)
    if context_tokens is not None:
        plan["context_tokens"] = context_tokens
        plan["kv_gb_at_context"] = round(kv_cache_bytes(config, context_tokens, cache_dtype) / GB, 2)
    if plan["gpu_gb"] is None:
        plan["kv_tokens_that_fit"] = None
        return plan
    free = (plan["gpu_gb"] - plan["weights_gb"] - RESERVE_GB) * GB
    fit = max(0, int(free // per_token))
    plan["kv_tokens_that_fit"] = min(fit, max_positions) if max_positions else fit
    return plan


def needle_in_haystack(model, tokenizer, context_tokens: int, depths=(0.1, 0.5, 0.9), seed: int = 0,
                       max_new_tokens: int = 16) -> list[dict]:
    """Hide a passphrase at each depth of a `context_tokens`-token text; did the model repeat it back?

    The text is the lab recall task (`nbhelpers.lab.tasks.recall`): filler sentences in five languages with "The
    passphrase is WORD." inside, then "What is the passphrase?". The lab model was trained on that form; a real
    chat model reads it as plain language.
    """
    from nbhelpers.lab import tasks
    from nbhelpers.moe.chat import generate

    checks.integer("context_tokens", context_tokens, minimum=16)
    limit = int(getattr(model.config, "max_position_embeddings", 0)) or None
    if limit and context_tokens + max_new_tokens > limit:
        raise checks.ParameterError("context_tokens", context_tokens,
                                    f"at most {limit - max_new_tokens} for this model "
                                    f"(max_position_embeddings {limit} minus {max_new_tokens} new tokens)")
    count = tasks.token_counter(tokenizer)
    results = []
    for depth in depths:
        checks.number("depth", depth, minimum=0.0, maximum=1.0)
        item = tasks.recall(random.Random(f"needle:{seed}:{depth}"), context_tokens, count, depth=depth)
        out = generate(model, tokenizer, item.message, max_new_tokens=max_new_tokens, temperature=0.0, stream=False)
        results.append({"depth": depth, "prompt_tokens": out["prompt_tokens"], "passphrase": item.expected["word"],
                        "found": tasks.grade(item, out["text"]), "answer": out["text"].strip()[:80]})
    return results
