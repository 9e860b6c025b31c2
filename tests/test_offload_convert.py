"""The converter on a tiny sharded checkpoint (the Hub's per-expert layout), loading the result, and the budgets."""

import json

import pytest
import torch

from nbhelpers.checks import ParameterError
from nbhelpers.moe.offload import offload_experts
from nbhelpers.moe.offload.budgets import conversion_budget, offload_memory_plan
from nbhelpers.moe.offload.convert import convert_checkpoint
from nbhelpers.moe.offload.load import load_offloaded


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = MixtralForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" not in name:
                parameter.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("ckpt") / "source"
    model.save_pretrained(folder, max_shard_size="40KB")  # several shards, experts split across them
    return model, folder


IDS = torch.randint(0, 64, (1, 7), generator=torch.Generator().manual_seed(2))


def test_convert_and_load_unquantized_is_exact(sharded, tmp_path):
    model, folder = sharded
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3
    assert any(".experts.0.w1.weight" in key for key in index["weight_map"])  # the Hub's per-expert names
    out = convert_checkpoint(folder, tmp_path / "compact", quantization=None, dtype=None, progress=False)
    manifest = json.loads((out / "offload.json").read_text())
    assert sorted(manifest["layers"]) == ["0", "1", "2", "rest"]
    with torch.no_grad():
        reference = model(IDS).logits
        loaded, engine = load_offloaded(out, cache_size=1, prefetch=True, device="cpu")
        assert (loaded(IDS).logits - reference).abs().max().item() < 1e-5
    assert engine.stats()["lookups"] > 0
    assert not any(p.device.type == "meta" for p in loaded.parameters())


def test_convert_int4_matches_in_memory_quantization(sharded, tmp_path):
    import copy

    model, folder = sharded
    out = convert_checkpoint(folder, tmp_path / "compact4", quantization="int4", dtype="float32", progress=False)
    manifest = json.loads((out / "offload.json").read_text())
    assert manifest["quantizer"].startswith("hqq ") and manifest["format"] == 2
    with torch.no_grad():
        loaded, _ = load_offloaded(out, cache_size=2, device="cpu")
        in_memory = copy.deepcopy(model)
        offload_experts(in_memory, cache_size=2, quantization="int4", device="cpu")
        assert torch.equal(loaded(IDS).logits, in_memory(IDS).logits)
    raw = sum(p.numel() * 4 for n, p in model.named_parameters() if ".experts." in n)
    assert manifest["bytes"] < sum(p.numel() * 4 for p in model.parameters()) - raw * 0.8  # experts ~1/7 size


def test_bad_inputs(tmp_path):
    with pytest.raises(ParameterError, match="quantization"):
        convert_checkpoint(tmp_path, tmp_path / "x", quantization="nf4")
    with pytest.raises(ParameterError, match="source"):
        convert_checkpoint(tmp_path, tmp_path / "x")  # no safetensors in it
    with pytest.raises(ParameterError, match="folder"):
        load_offloaded(tmp_path)
    (tmp_path / "offload.json").write_text(json.dumps({"format": 1, "quantization": "int2"}))
    with pytest.raises(ParameterError, match="folder.*format 2.*convert the model again"):
        load_offloaded(tmp_path)  # packed by the pre-HQQ quantizer: refused, not misread


def test_mixtral_budgets_fit_a_free_t4():
    from transformers import MixtralConfig

    from pathlib import Path

    values = json.loads((Path(__file__).parents[1] / "data/configs/mixtral-8x7b.json").read_text())
    config = MixtralConfig(**{k: v for k, v in values.items() if k not in ("architectures", "torch_dtype")})
    plan = offload_memory_plan(config, cache_size=4, quantization="int2")
    assert plan["vram_gb"] < 14.0 and plan["ram_pinned_gb"] < 8.0 and 50 < plan["expert_mb"] < 60
    budget = conversion_budget(config, quantization="int2")
    assert 17.0 < budget["output_gb"] < 17.6 and budget["peak_ram_gb"] < 12.7
