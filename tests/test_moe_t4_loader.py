"""The t4 chat model's architecture (Granite MoE), saved at tiny size and loaded through the profile's loader."""

import dataclasses

import pytest
import torch

from nbhelpers import loaders
from nbhelpers.moe import capture_routing, count_parameters, generate, load_config
from nbhelpers.profiles import ModelSpec, get_profile


@pytest.fixture(scope="module")
def local_t4_profile(tmp_path_factory):
    """A copy of the t4 profile whose chat model is a tiny Granite MoE saved to disk, on the CPU."""
    from transformers import AutoTokenizer, GraniteMoeForCausalLM

    from nbhelpers import tiny

    folder = tmp_path_factory.mktemp("granite-tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny.ensure("mixtral"))
    real = load_config(get_profile("t4").model("chat").source)
    config = real.__class__(**{**real.to_dict(), "vocab_size": len(tokenizer), "hidden_size": 48,
                               "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "max_position_embeddings": 256, "bos_token_id": 1,
                               "eos_token_id": 2, "pad_token_id": 2})
    torch.manual_seed(0)
    GraniteMoeForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    t4 = get_profile("t4")
    spec = dataclasses.replace(t4.model("chat"), source=str(folder))
    return dataclasses.replace(t4, name="t4-local", device="cpu", models={**t4.models, "chat": spec}), config


def test_t4_loader_loads_the_saved_granite_moe(local_t4_profile):
    profile, config = local_t4_profile
    assert isinstance(profile.model("chat"), ModelSpec) and profile.model("chat").dtype == "float16"
    model, tokenizer = loaders.load_chat(profile)
    assert type(model).__name__ == "GraniteMoeForCausalLM" and not model.training
    assert model.dtype == torch.float32  # fp16 only on a GPU
    assert (model.config.num_local_experts, model.config.num_experts_per_tok) == (40, 8)  # the real expert count
    assert count_parameters(model.config)["total"] == sum(p.numel() for p in model.parameters())
    routing = capture_routing(model, tokenizer, "Bonjour, comment ça va ?")
    assert routing.experts.shape[0] == 2 and routing.experts.shape[-1] == 8 and routing.num_experts == 40
    out = generate(model, tokenizer, "Hello", max_new_tokens=5, temperature=0.0, stream=False)
    assert out["new_tokens"] <= 5 and out["prompt_tokens"] > 1
