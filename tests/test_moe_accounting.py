"""Parameter accounting from configs alone (meta device) and the KV-cache planner."""

import pytest

from nbhelpers.checks import ParameterError
from nbhelpers.moe import count_parameters, kv_cache_bytes, kv_plan, load_config, memory_plan


def test_mixtral_accounting_is_exact():
    counts = count_parameters("mixtral-8x7b")
    assert counts["total"] == 46_702_792_704
    assert counts["experts"] == 45_097_156_608
    assert counts["active"] == 12_879_925_248
    assert round(counts["active"] / counts["total"] * 100, 1) == 27.6
    assert (counts["num_experts"], counts["top_k"]) == (8, 2)


def test_t4_model_config_is_shipped_and_counted():
    from nbhelpers.profiles import get_profile

    config = load_config(get_profile("t4").model("chat").source)
    assert config.model_type == "granitemoe"
    counts = count_parameters(config)
    assert 3.2e9 < counts["total"] < 3.4e9  # "3.3B" on the model card
    assert 0.8e9 < counts["active"] < 0.9e9  # "A800M": 8 of 40 experts per token
    assert counts["experts"] == 32 * 40 * 3 * 1536 * 512


def test_memory_plan_says_mixtral_does_not_fit_a_t4_but_granite_does():
    from nbhelpers.moe.accounting import T4_GB

    assert memory_plan("mixtral-8x7b", "float16", T4_GB)["fits"] is False
    granite = memory_plan("granite-3.1-3b-a800m-instruct", "float16", T4_GB)
    assert granite["fits"] is True and 6 < granite["weights_gb"] < 7
    # 15,360 MiB is all the T4 shows: weights that leave less than the reserve free do not fit
    assert memory_plan("granite-3.1-3b-a800m-instruct", "float16", granite["weights_gb"] + 0.5)["fits"] is False
    assert memory_plan("granite-3.1-3b-a800m-instruct", "float16", granite["weights_gb"] + 1.5)["fits"] is True


def test_kv_cache_of_mixtral_at_32k_in_fp16_is_4_29_gb():
    config = load_config("mixtral-8x7b")
    assert kv_cache_bytes(config, 32768, "float16") == 2 * 32 * 8 * 128 * 32768 * 2
    assert round(kv_cache_bytes(config, 32768, "float16") / 1e9, 2) == 4.29
    plan = kv_plan(config, "float16", gpu_gb=100.0, context_tokens=32768)
    assert plan["kv_gb_at_context"] == 4.29
    assert plan["kv_tokens_that_fit"] == 32768  # capped at the model's context
    assert kv_plan(config, "float16", gpu_gb=16.1)["kv_tokens_that_fit"] == 0  # weights alone overflow a T4


def test_kv_plan_counts_tokens_beside_the_weights():
    config = load_config("granite-3.1-3b-a800m-instruct")
    plan = kv_plan(config, "float16", gpu_gb=16.0)
    expected = int((16.0 - plan["weights_gb"] - plan["reserve_gb"]) * 1e9 // plan["kv_bytes_per_token"])
    assert plan["kv_tokens_that_fit"] == expected > 100_000


def test_unknown_config_and_dtype_fail_clearly():
    with pytest.raises(ParameterError, match="mixtral-8x7b"):
        load_config("no-such-model")
    with pytest.raises(ParameterError, match="dtype"):
        memory_plan("mixtral-8x7b", "float8")
