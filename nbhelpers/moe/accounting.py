"""How many parameters does an MoE model have, and how many work on each token? From its config alone.

The model is built on PyTorch's meta device: every tensor has a shape and a dtype but no storage, so Mixtral's
46.7 billion parameters cost no memory and about a second. Counting is then exact, because it is the real
transformers module tree and not a formula that could drift from it.

    active = everything outside the experts + experts x (k / E)

since each token runs k of the E experts in every layer (attention, embeddings and norms run for every token).
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers import checks, dtypes
from nbhelpers.moe.layouts import num_experts, top_k
from nbhelpers.paths import data_dir

DTYPE_BYTES = {**dtypes.BYTES, "int8": 1, "int4": 0.5}  # storage per weight: the float dtypes and quantized ones
GB = 1e9  # decimal gigabytes, as model cards and the Mixtral paper count
T4_VISIBLE_MIB = 15360  # what a free Colab/Kaggle T4 shows (nvidia-smi, torch.cuda.mem_get_info)
T4_GB = T4_VISIBLE_MIB * 2**20 / GB  # the same 15,360 MiB in decimal GB: 16.1, all of it, before any reserve
RESERVE_GB = 1.0  # CUDA context, activations and fragmentation: never plan to the last byte


def shipped_configs() -> dict:
    """name -> path of the configs shipped in data/configs."""
    return {p.stem: p for p in sorted((data_dir() / "configs").glob("*.json"))}


def load_config(name_or_path):
    """A transformers config from a shipped name ("mixtral-8x7b"), a Hub-style id whose last part is shipped
    ("ibm-granite/granite-3.1-3b-a800m-instruct"), a config.json path or a folder. Never touches the network."""
    from transformers import AutoConfig

    shipped = shipped_configs()
    key = str(name_or_path).split("/")[-1].lower()
    if key in shipped:
        path = shipped[key]
    else:
        path = Path(name_or_path)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise checks.ParameterError("config", str(name_or_path),
                                        "a shipped config (" + ", ".join(shipped) + ") or a config.json path")
    values = checks.existing_json("model config", path, "a model config (JSON)")
    if not isinstance(values, dict) or "model_type" not in values:
        raise checks.ParameterError("model config", str(path), "a transformers config (a JSON object with model_type)")
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


def meta_model(config):
    """The transformers model of `config` without weights: parameters on PyTorch's meta device (shapes and dtypes,
    no storage), buffers real. The package's one such builder: it counts parameters here and in the planner, and
    the offload loader assigns weights into it, which is why the (small) buffers such as rotary tables are real."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # built this way, tied embeddings stay two parameters until tied: count them once
    return model


def count_parameters(config) -> dict:
    """total, experts and active (per token) parameter counts (ints), plus the active fraction.

    `config` is a transformers config, or anything `load_config` accepts. Tied embeddings count once.
    """
    if not hasattr(config, "model_type"):
        config = load_config(config)
    key = config.to_json_string()
    if key not in _COUNTS:
        _COUNTS[key] = _count(config)
    return dict(_COUNTS[key])


_COUNTS: dict = {}


def _count(config) -> dict:
    model = meta_model(config)
    total = experts = 0
    for name, parameter in model.named_parameters():  # named_parameters skips a tied copy
        total += parameter.numel()
        if ".experts." in name:
            experts += parameter.numel()
    e, k = num_experts(config), top_k(config)
    active = total - experts + experts * k // e
    return {"model_type": config.model_type, "total": total, "experts": experts, "active": active,
            "active_fraction": round(active / total, 4), "num_experts": e, "top_k": k,
            "layers": config.num_hidden_layers}


def memory_plan(config, dtype: str = "float16", gpu_gb: float | None = None) -> dict:
    """Weight memory of the model in `dtype` against a GPU (`gpu_gb` decimal GB; None: the GPU here, if any).
    The weights fit when they leave `RESERVE_GB` of the GPU free."""
    checks.choice("dtype", dtype, DTYPE_BYTES)
    counts = count_parameters(config)
    weights = counts["total"] * DTYPE_BYTES[dtype]
    if gpu_gb is None:
        from nbhelpers import env

        gpu = env.gpu()
        gpu_gb = gpu["total_gb"] * 1024**3 / GB if gpu else None
    plan = {"dtype": dtype, "weights_gb": round(weights / GB, 2), "gpu_gb": gpu_gb,
            "active_weights_gb": round(counts["active"] * DTYPE_BYTES[dtype] / GB, 2)}
    plan["fits"] = None if gpu_gb is None else weights / GB + RESERVE_GB <= gpu_gb
    return plan
