"""The vLLM command builder: arguments for two T4s, a large GPU pair and two machines, without vLLM or a GPU."""

import subprocess
import sys

import pytest

from nbhelpers.checks import ParameterError
from nbhelpers.moe.accounting import load_config
from nbhelpers.moe.context import RESERVE_GB, kv_cache_bytes
from nbhelpers.plan.gpus import GPUS
from nbhelpers.serve import vllm_engine


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def _budget_check(settings):
    """--max-model-len fits the KV budget per GPU, and the next 1,024 tokens would not (or it is the model's max)."""
    config = load_config("mixtral-8x7b")
    per_gpu = kv_cache_bytes(config, 1, settings["dtype"]) / (settings["tensor_parallel_size"]
                                                              * settings["pipeline_parallel_size"])
    budget = (GPUS[settings["gpu"]].vram_gib * 2**30 * vllm_engine.GPU_MEMORY_UTILIZATION
              - settings["weights_gb_per_gpu"] * 1e9 - RESERVE_GB * 1e9)
    length = settings["max_model_len"]
    assert length % 1024 == 0 and length * per_gpu <= budget * 1.001
    assert length == config.max_position_embeddings or (length + 1024) * per_gpu > budget


def test_two_t4s_serve_mixtral_from_its_awq_checkpoint_in_fp16():
    settings = vllm_engine.plan("mixtral-8x7b-instruct", "t4", gpus=2)
    argv = vllm_engine.command(settings)
    assert argv[:3] == ["vllm", "serve", "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ"]
    assert _flag(argv, "--quantization") == "awq" and _flag(argv, "--dtype") == "float16"  # no bf16 on a T4
    assert _flag(argv, "--tensor-parallel-size") == "2" and "--pipeline-parallel-size" not in argv
    assert 4096 <= int(_flag(argv, "--max-model-len")) < 32768  # the KV cache, not the model, is the limit here
    assert _flag(argv, "--host") == "127.0.0.1" and _flag(argv, "--served-model-name") == "mixtral-8x7b-instruct"
    assert "--enforce-eager" in argv  # about 1 GB left per T4: no room for CUDA graphs
    assert 10 < settings["weights_gb_per_gpu"] < GPUS["t4"].vram_gib * 2**30 / 1e9
    _budget_check(settings)


def test_one_t4_is_refused_with_the_reason():
    with pytest.raises(ParameterError, match="gpus=1.*does not fit"):
        vllm_engine.plan("mixtral-8x7b-instruct", "t4", gpus=1)


def test_large_gpus_serve_the_original_weights_in_bf16_at_full_context():
    settings = vllm_engine.plan("mixtral-8x7b-instruct", "a100-80", gpus=2)
    argv = vllm_engine.command(settings, port=9000)
    assert argv[2] == "mistralai/Mixtral-8x7B-Instruct-v0.1" and "--quantization" not in argv
    assert _flag(argv, "--dtype") == "bfloat16" and _flag(argv, "--tensor-parallel-size") == "2"
    assert _flag(argv, "--max-model-len") == "32768" and _flag(argv, "--port") == "9000"
    assert "--enforce-eager" not in argv
    _budget_check(settings)


def test_two_machines_start_ray_then_serve_with_one_pipeline_stage_each():
    settings = vllm_engine.plan("mixtral-8x7b-instruct", "l4", gpus=4, nodes=2)
    head, worker, run = vllm_engine.steps(settings, head_address="10.0.0.1")
    assert head["command"] == ["ray", "start", "--head", "--port", "6379"]
    assert worker["command"] == ["ray", "start", "--address", "10.0.0.1:6379"]
    argv = run["command"]
    assert run["where"] == "head machine"
    assert _flag(argv, "--tensor-parallel-size") == "4" and _flag(argv, "--pipeline-parallel-size") == "2"
    assert _flag(argv, "--distributed-executor-backend") == "ray" and _flag(argv, "--dtype") == "bfloat16"
    _budget_check(settings)


@pytest.mark.parametrize("kwargs, name", [({"gpus": 3}, "gpus"), ({"gpus": 0}, "gpus"), ({"nodes": 0}, "nodes"),
                                          ({"gpu": "h900"}, "gpu"), ({"model": "gpt-5"}, "model")])
def test_bad_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ParameterError, match=f"^{name}="):
        vllm_engine.plan(**{"model": "mixtral-8x7b-instruct", "gpu": "t4", "gpus": 2, **kwargs})


def test_print_command_needs_neither_vllm_nor_a_gpu():
    out = subprocess.run([sys.executable, "-m", "nbhelpers", "serve", "--profile", "t4", "--engine", "vllm",
                          "--gpus", "2", "--print-command"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "vllm serve TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ" in out.stdout and "--tensor-parallel-size 2" in out.stdout


def test_missing_vllm_and_missing_gpu_are_said_clearly(monkeypatch):
    settings = vllm_engine.plan("mixtral-8x7b-instruct", "t4", gpus=2)
    monkeypatch.setattr(vllm_engine.shutil, "which", lambda name: None)
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ParameterError, match="vLLM is not installed.*--print-command"):
        vllm_engine.check_runnable(settings)
    monkeypatch.setattr(vllm_engine.shutil, "which", lambda name: "/usr/bin/vllm")
    monkeypatch.setattr("nbhelpers.env.gpu", lambda: None)
    with pytest.raises(ParameterError, match="needs NVIDIA GPUs"):
        vllm_engine.check_runnable(settings)
    monkeypatch.setattr("nbhelpers.env.gpu", lambda: {"count": 1})
    with pytest.raises(ParameterError, match="has 1 GPU"):
        vllm_engine.check_runnable(settings)


def test_tiny_refuses_vllm():
    out = subprocess.run([sys.executable, "-m", "nbhelpers", "serve", "--profile", "tiny", "--engine", "vllm"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "vLLM needs NVIDIA GPUs" in out.stderr
