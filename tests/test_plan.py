"""The memory planner: exact parameter counts, memory formulas, verdicts, calibration and `nbhelpers plan`."""

import json

import pytest

from nbhelpers import cli
from nbhelpers.checks import ParameterError
from nbhelpers.plan import analytic, configs, memory, plan

# Published totals (model cards, the diffusers/transformers classes built from the Hub configs).
PUBLISHED = {
    ("sd15", "unet"): 859_520_964,
    ("sd15", "vae"): 83_653_863,
    ("sd15", "text_encoder"): 123_060_480,
    ("sdxl", "unet"): 2_567_463_684,
    ("sdxl", "text_encoder_2"): 694_659_840,
    ("sd3-medium", "transformer"): 2_028_328_000,
    ("sd3-medium", "text_encoder_3"): 4_762_310_656,
    # FLUX.1-dev's 11,901,408,320 minus the guidance embedder schnell does not have (2 linears: 256->3072->3072)
    ("flux1-schnell", "transformer"): 11_901_408_320 - (256 * 3072 + 3072 + 3072 * 3072 + 3072),
    ("mixtral-8x7b", "model"): 46_702_792_704,
}


def _independent_meta_count(model, component):
    """Build the component again straight from its library class, not through nbhelpers.plan.configs.build."""
    import diffusers
    import torch
    import transformers

    library, class_name = configs.component_classes(model)[component]
    values = configs.component_config(model, component)
    with torch.device("meta"):
        if library == "diffusers":
            module = getattr(diffusers, class_name)(**{k: v for k, v in values.items() if not k.startswith("_")})
        else:
            config_class = getattr(transformers, class_name).config_class
            keep = {k: v for k, v in values.items() if k not in ("architectures", "model_type", "_name_or_path")}
            module = getattr(transformers, class_name)(config_class(**keep))
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("model", configs.DIFFUSION)
def test_counts_equal_an_independent_meta_build_and_the_arithmetic(model):
    for count in configs.components(model):
        assert count.total == _independent_meta_count(model, count.name), (model, count.name)
        by_hand = analytic.count(count.class_name, configs.component_config(model, count.name))
        if by_hand is not None:
            assert by_hand == count.total, (model, count.name)


def test_counts_match_published_numbers():
    for (model, component), published in PUBLISHED.items():
        counts = {c.name: c.total for c in configs.components(model)}
        assert counts[component] == published, (model, component)


def test_moe_counts_use_the_accounting_module_and_the_arithmetic():
    from nbhelpers.moe.accounting import count_parameters

    for model in configs.moe_names():
        (count,) = configs.components(model)
        assert count.total == count_parameters(model)["total"]
        assert configs.analytic_count(model, count) == count.total
    (mixtral,) = configs.components("mixtral-8x7b")
    assert mixtral.experts == 45_097_156_608 and mixtral.active == 12_879_925_248


def test_weights_kv_cache_and_quantization():
    (mixtral,) = configs.components("mixtral-8x7b")
    assert memory.weight_bytes(mixtral, "fp16") == 2 * 46_702_792_704
    assert memory.weight_bytes(mixtral, "fp32") == 4 * 46_702_792_704
    assert memory.weight_bytes(mixtral, "fp16", "nf4") < memory.weight_bytes(mixtral, "fp16", "int8")
    assert round(memory.kv_cache_bytes("mixtral-8x7b", 32768) / 1e9, 2) == 4.29  # GUIDE: 4.29 GB in fp16
    # mixtral-offloading's HQQ setting (attention 4-bit, experts 2-bit) is published as 17.5 GB
    assert 16.5e9 < memory.weight_bytes(mixtral, "fp16", "hqq4", "hqq2") < 18.5e9


def test_activations_grow_with_resolution_and_batch_and_tiling_caps_the_vae():
    small = memory.diffusion_activations("sdxl", 1024, 1024, 1)
    assert memory.diffusion_activations("sdxl", 1024, 1024, 2)["unet"] > small["unet"]
    assert memory.diffusion_activations("sd15", 1024, 1024, 1, vae_tiling=True)["vae"] < \
        memory.diffusion_activations("sd15", 1024, 1024, 1)["vae"]
    assert memory.diffusion_activations("sd15", 512, 512, attention="eager")["unet"] > \
        memory.diffusion_activations("sd15", 512, 512)["unet"]


def test_verdicts_on_a_t4():
    assert plan("sd15", "t4")["verdict"] == "fp16"
    assert plan("sdxl", "t4")["verdict"] == "fp16"
    assert "nf4" in plan("flux1-schnell", "t4")["verdict"]
    assert plan("mixtral-8x7b", "t4")["verdict"].startswith("expert offloading")
    assert plan("t4-moe", "t4")["verdict"] == "fp16"
    assert plan("mixtral-8x7b", "a100-80")["settings"][0]["fits"] is False  # 87 GiB of fp16 weights
    assert plan("flux1-schnell", "a100-80")["verdict"] == "bf16"


@pytest.mark.parametrize("call, name", [
    (lambda: plan("sd4"), "model"), (lambda: plan("sd15", "h100"), "gpu"), (lambda: plan("sd15", batch=0), "batch"),
    (lambda: plan("sd15", width=500), "width"), (lambda: plan("mixtral-8x7b", context=-1), "context"),
])
def test_bad_input_names_what_is_allowed(call, name):
    with pytest.raises(ParameterError) as error:
        call()
    assert error.value.name == name


def test_cli_plan_text_json_and_errors(capsys):
    assert cli.main(["plan", "sd15", "--gpu", "t4"]) == 0
    out = capsys.readouterr().out
    assert "859,520,964" in out and "verdict: fp16" in out
    assert cli.main(["plan", "mixtral-8x7b", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parameters"] == 46_702_792_704 and result["gpu"] == "t4"
    assert cli.main(["plan", "sd4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sd15" in err and "mixtral-8x7b" in err
    assert cli.main(["plan", "sd15", "--gpu", "v100"]) == 2
    assert "a100-80" in capsys.readouterr().err


def test_plan_accepts_the_hub_ids_of_the_models_it_knows(capsys):
    assert configs.check_model("stable-diffusion-v1-5/stable-diffusion-v1-5") == "sd15"
    assert configs.check_model("mistralai/Mixtral-8x7B-Instruct-v0.1") == "mixtral-8x7b"  # same shapes as the base
    assert configs.check_model("MISTRALAI/mixtral-8x7b-v0.1") == "mixtral-8x7b"  # the Hub ignores case
    assert configs.check_model("ibm-granite/granite-3.1-3b-a800m-instruct") == "granite-3.1-3b-a800m-instruct"
    assert plan("stabilityai/stable-diffusion-xl-base-1.0", "t4")["model"] == "sdxl"
    assert cli.main(["plan", "mistralai/Mixtral-8x7B-Instruct-v0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "mixtral-8x7b" and result["parameters"] == 46_702_792_704
    with pytest.raises(ParameterError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        configs.check_model("runwayml/stable-diffusion-v1-5")  # gone from the Hub, and not a shipped source
    assert cli.main(["plan", "someone/unknown-model"]) == 2
    assert "Hub id" in capsys.readouterr().err


def test_predicted_peak_within_15_percent_of_measured_on_cpu():
    """Settings not used to fit the constants; a fresh process measures the peak RSS rise of tiny-SD generations."""
    from nbhelpers.plan.measure import measure_tiny

    measured = measure_tiny([(320, 320, 2), (448, 192, 1)])
    for row in measured["rows"]:
        predicted_act = max(memory.diffusion_activations("tiny-sd", row["width"], row["height"], row["batch"],
                                                          "fp32").values())
        assert abs(predicted_act / row["peak_bytes"] - 1) < 0.15, (row, predicted_act)
        weights = sum(memory.weight_bytes(c, "fp32") for c in configs.components("tiny-sd"))
        assert abs(weights - measured["weights_bytes"]) / measured["weights_bytes"] < 0.01
        total = (weights + predicted_act) / (measured["weights_bytes"] + row["peak_bytes"])
        assert abs(total - 1) < 0.15


def test_the_planner_and_the_offload_engine_agree_on_mixtral():
    """`nbhelpers plan` and 01b's table come from one computation (moe.offload.budgets.memory_bytes)."""
    from nbhelpers.moe.offload import lesson
    from nbhelpers.plan import verdict

    row = next(s for s in plan("mixtral-8x7b", "t4")["settings"] if s["setting"].startswith("expert offloading"))
    engine = lesson.plan_table(cache_sizes=(4,), quantization="int2")[0]  # 01b's t4 default: 4 of 8 experts
    assert "4 of 8" in row["setting"] and row["expert_quantization"] == "int2" and row["fits"]
    assert row["ram_gib"] == pytest.approx(verdict.RAM_BASE_GIB + engine["ram_pinned_gb"] * 1e9 / 2**30, abs=0.01)
    # the planner adds the KV cache, activations and the CUDA context to the engine's weights
    assert engine["vram_gb"] * 1e9 / 2**30 < row["gpu_gib"] < 15.0


@pytest.mark.parametrize("model_id", ["stable-diffusion-v1-5/stable-diffusion-inpainting",
                                      "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"])
def test_the_planner_knows_the_inpainting_models_03_loads(model_id):
    """03's t4 and large inpainting models, by the Hub ids the profiles use: 9 input channels, and they fit a T4."""
    from nbhelpers.profiles import PROFILES

    assert model_id in {p.models["inpaint"].source for p in PROFILES.values()}
    result = plan(model_id, "t4")
    assert result["model"].endswith("-inpainting") and any(s["fits"] for s in result["settings"])
    assert configs.component_config(result["model"], "unet")["in_channels"] == 9
