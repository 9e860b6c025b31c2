import sys
import types

from nbhelpers import env


def test_runtime_detects_colab_kaggle_and_local(local_runtime):
    assert env.runtime() == "local"
    local_runtime.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert env.runtime() == "kaggle"
    local_runtime.delenv("KAGGLE_KERNEL_RUN_TYPE")
    local_runtime.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert env.runtime() == "colab"


def test_best_dtype_is_fp16_on_a_t4_and_bf16_on_ampere():
    t4 = {"name": "Tesla T4", "bf16": False, "total_gb": 14.7}
    a100 = {"name": "A100", "bf16": True, "total_gb": 39.4}
    assert env.best_dtype(t4) == "float16"
    assert env.best_dtype(a100) == "bfloat16"
    assert env.best_dtype({}) == "float32"


def test_token_is_read_from_the_environment_only_when_set(local_runtime):
    local_runtime.delenv("HF_TOKEN", raising=False)
    local_runtime.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert env.hf_token() is None
    local_runtime.setenv("HUGGING_FACE_HUB_TOKEN", "hf_" + "x" * 34)
    assert env.hf_token() == "hf_" + "x" * 34 and env.hf_token_available()
