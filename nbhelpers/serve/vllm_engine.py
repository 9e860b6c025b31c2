"""The `vllm` engine: a `vllm serve` command sized by the planner's arithmetic, for one GPU, several, or several
machines.

For each GPU of a tensor-parallel group of N (and each of P pipeline stages, one per machine):

    weights per GPU  = weights / (N x P)                   (nbhelpers.plan.memory.weight_bytes)
    KV per token     = 2 x layers/P x max(1, kv_heads/N) x head_dim x bytes   (nbhelpers.moe.context's formula)
    KV budget        = VRAM x 0.90 (vLLM's --gpu-memory-utilization) - weights per GPU - 1 GB reserve
    --max-model-len  = min(the model's positions, KV budget / KV per token), rounded down to 1,024

Unquantized weights in the GPU's 16-bit dtype come first (bf16 from Ampere on, fp16 on a T4); when they leave less
than 4,096 tokens of KV cache, the model's AWQ checkpoint is tried (4-bit, fp16 activations). Mixtral-8x7B-Instruct
on two T4s (Kaggle) is that case: 93 GB in fp16, 24.5 GB in AWQ, 12.2 GB on each T4.

vLLM sizes its KV cache itself at start-up and prints it ("# GPU blocks"); these numbers only choose settings that
should start, and say why. They are not measurements.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
from dataclasses import dataclass

from nbhelpers import checks

GPU_MEMORY_UTILIZATION = 0.90  # vLLM's default, passed explicitly so the arithmetic above is what vLLM reserves
MIN_CONTEXT = 4096
CONTEXT_STEP = 1024
EAGER_BELOW_GB = 2.0  # CUDA graphs cost memory a nearly-full GPU (a T4) does not have: run eagerly there
RAY_PORT = 6379


@dataclass(frozen=True)
class ServedModel:
    hub: str  # the checkpoint in its original precision
    config: str  # the config shipped in data/configs, for the planner
    awq: str | None = None  # a 4-bit AWQ checkpoint of the same weights, where one exists on the Hub


MODELS = {
    "mixtral-8x7b-instruct": ServedModel("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b",
                                         awq="TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ"),
    "granite-3.1-3b-a800m-instruct": ServedModel("ibm-granite/granite-3.1-3b-a800m-instruct",
                                                 "granite-3.1-3b-a800m-instruct"),
}


def _kv_bytes_per_token_per_gpu(config, dtype: str, tp: int, pp: int) -> int:
    from nbhelpers.moe.context import head_dim
    from nbhelpers.moe.accounting import DTYPE_BYTES

    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    layers = -(-config.num_hidden_layers // pp)  # the largest pipeline stage
    # vLLM splits KV heads over the tensor-parallel GPUs, and replicates them when there are more GPUs than heads
    return int(2 * layers * max(1, kv_heads // tp) * head_dim(config) * DTYPE_BYTES[dtype])


def plan(model: str = "mixtral-8x7b-instruct", gpu: str = "t4", gpus: int = 2, nodes: int = 1) -> dict:
    """The settings for `model` on `nodes` machines of `gpus` GPUs of kind `gpu` (see nbhelpers.plan.gpus)."""
    from nbhelpers.moe import accounting
    from nbhelpers.moe.context import RESERVE_GB
    from nbhelpers.plan import configs, memory
    from nbhelpers.plan.gpus import get_gpu, gpu_key

    checks.choice("model", model, MODELS)
    card = get_gpu(gpu)
    tp = checks.integer("gpus", gpus, minimum=1, maximum=64)
    pp = checks.integer("nodes", nodes, minimum=1, maximum=64)
    served = MODELS[model]
    config = accounting.load_config(served.config)
    heads = config.num_attention_heads
    if heads % tp:
        raise checks.ParameterError("gpus", gpus, f"tensor parallelism splits {model}'s {heads} attention heads "
                                                  f"evenly: use a divisor of {heads}")
    if pp > config.num_hidden_layers:
        raise checks.ParameterError("nodes", nodes, f"at most {config.num_hidden_layers} (one layer per stage)")
    (count,) = configs.components(served.config)
    native = "bfloat16" if card.bf16 else "float16"
    options = [(native, None, served.hub)] + ([("float16", "awq4", served.awq)] if served.awq else [])
    vram = card.vram_gib * memory.GIB
    tried = []
    for dtype, quant, checkpoint in options:
        weights = memory.weight_bytes(count, {"bfloat16": "bf16", "float16": "fp16"}[dtype], quant)
        per_gpu = weights / (tp * pp)
        budget = vram * GPU_MEMORY_UTILIZATION - per_gpu - RESERVE_GB * 1e9
        per_token = _kv_bytes_per_token_per_gpu(config, dtype, tp, pp)
        fit = max(0, int(budget // per_token))
        max_len = min(config.max_position_embeddings, fit) // CONTEXT_STEP * CONTEXT_STEP
        row = {"model": model, "checkpoint": checkpoint, "quantization": "awq" if quant else None, "dtype": dtype,
               "gpu": gpu_key(gpu), "gpus_per_node": tp, "nodes": pp, "tensor_parallel_size": tp,
               "pipeline_parallel_size": pp, "weights_gb": round(weights / 1e9, 2),
               "weights_gb_per_gpu": round(per_gpu / 1e9, 2), "kv_budget_gb_per_gpu": round(budget / 1e9, 2),
               "kv_bytes_per_token_per_gpu": per_token, "kv_tokens_that_fit": fit, "max_model_len": max_len,
               "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "enforce_eager": budget < EAGER_BELOW_GB * 1e9}
        if max_len >= MIN_CONTEXT:
            return row
        tried.append(f"{quant or dtype}: {row['weights_gb_per_gpu']} GB of weights per GPU leaves room for "
                     f"{fit} tokens")
    raise checks.ParameterError(
        "gpus", gpus, f"{model} does not fit {pp} x {tp} {card.name} with {MIN_CONTEXT} tokens of context "
                      f"({'; '.join(tried)}): use more GPUs (--gpus) or machines (--nodes)")


def command(settings: dict, host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """`vllm serve ...` for a plan() row. The model is served under its short name, so clients keep working when
    the checkpoint behind it changes (say from AWQ on T4s to bf16 on bigger GPUs)."""
    argv = ["vllm", "serve", settings["checkpoint"], "--served-model-name", settings["model"],
            "--tensor-parallel-size", str(settings["tensor_parallel_size"])]
    if settings["pipeline_parallel_size"] > 1:
        # one pipeline stage per machine; Ray places the stages on the machines of its cluster
        argv += ["--pipeline-parallel-size", str(settings["pipeline_parallel_size"]),
                 "--distributed-executor-backend", "ray"]
    argv += ["--dtype", settings["dtype"]]
    if settings["quantization"]:
        argv += ["--quantization", settings["quantization"]]
    argv += ["--max-model-len", str(settings["max_model_len"]),
             "--gpu-memory-utilization", str(settings["gpu_memory_utilization"])]
    if settings["enforce_eager"]:
        argv.append("--enforce-eager")
    return argv + ["--host", host, "--port", str(port)]


def steps(settings: dict, host: str = "127.0.0.1", port: int = 8000, head_address: str = "HEAD_IP") -> list[dict]:
    """What to run where. One machine: the command. Several: a Ray cluster first (vLLM's multi-node mode), then
    the command on the head machine, which uses every GPU of the cluster."""
    serve = {"where": "this machine", "command": command(settings, host, port)}
    if settings["nodes"] == 1:
        return [serve]
    return [{"where": "head machine", "command": ["ray", "start", "--head", "--port", str(RAY_PORT)]},
            {"where": f"each of the {settings['nodes'] - 1} other machines",
             "command": ["ray", "start", "--address", f"{head_address}:{RAY_PORT}"]},
            {**serve, "where": "head machine"}]


def format_steps(rows: list[dict]) -> str:
    return "\n".join(f"# {row['where']}\n{shlex.join(row['command'])}" for row in rows)


def check_runnable(settings: dict) -> None:
    """Fail with one clear line when vLLM or the GPUs it needs are missing here."""
    from nbhelpers import env

    if shutil.which("vllm") is None and importlib.util.find_spec("vllm") is None:
        raise checks.ParameterError("engine", "vllm", "vLLM is not installed here (pip install vllm, on Linux with "
                                                      "NVIDIA GPUs); --print-command shows the command without "
                                                      "running it")
    found = env.gpu()
    if found is None:
        raise checks.ParameterError("engine", "vllm", "vLLM needs NVIDIA GPUs and torch sees none here; without a "
                                                      "GPU use --engine transformers (--profile tiny)")
    if settings["nodes"] == 1 and found["count"] < settings["tensor_parallel_size"]:
        raise checks.ParameterError("gpus", settings["tensor_parallel_size"],
                                    f"this machine has {found['count']} GPU(s): pass --gpus {found['count']} or fewer")
