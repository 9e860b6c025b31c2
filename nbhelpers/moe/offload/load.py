"""Loading a checkpoint written by `convert.convert_checkpoint` into the offload engine, without ever holding the
16-bit experts: the model is built without weights (`moe.accounting.meta_model`), the non-expert weights go straight
to the device, and each layer's experts go from its file into the engine's caches, one layer in RAM at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbhelpers import checks, dtypes
from nbhelpers.moe import accounting
from nbhelpers.moe.offload import engine as engine_module
from nbhelpers.moe.offload import support
from nbhelpers.moe.offload.convert import EXPERT_KEY, FORMAT
from nbhelpers.moe.offload.experts import ExpertCodec


def load_offloaded(folder, cache_size: int = 4, prefetch: bool = True, device=None, exclusive: bool = True,
                   dtype=None, compile_dequant=None):
    """(model, engine) from a folder written by `convert_checkpoint`; the experts go straight into the caches."""
    folder = Path(folder)
    manifest_path = folder / "offload.json"
    if not manifest_path.exists():
        raise checks.ParameterError("folder", str(folder), "a folder written by convert_checkpoint")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise checks.ParameterError("folder", str(folder), f"a checkpoint of format {FORMAT} (this one is format "
                                    f"{manifest.get('format')}: convert the model again)")
    device = engine_module.check_options(cache_size, manifest["quantization"], manifest["group_size"], prefetch,
                                         device, manifest["num_experts"])[1]
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    model = accounting.meta_model(config)  # parameters on the meta device, buffers (rotary tables) real
    layers = support.moe_layers(model)
    for moe in layers:
        act_fn = moe.block.experts.act_fn
        moe.block.experts = None
        moe.act_fn = act_fn
    state = {}
    for name in manifest["layers"].values():  # everything but the experts, straight to the device
        with safe_open(str(folder / name), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if not EXPERT_KEY.match(key):
                    tensor = handle.get_tensor(key)
                    state[key] = tensor.to(device=device, dtype=dtypes.to_torch(dtype) or tensor.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    del state
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
        model.tie_weights()
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    codec = ExpertCodec(manifest["quantization"], manifest["group_size"],
                        compile_dequant=str(device).startswith("cuda") if compile_dequant is None else compile_dequant)
    sources = (_layer_experts(folder / manifest["layers"][str(moe.index)], moe, manifest["num_experts"])
               for moe in layers)  # one layer in RAM at a time: the caches copy it to the GPU and pinned memory
    engine = engine_module.OffloadEngine(model, layers, sources, codec, cache_size, device, prefetch, exclusive)
    return model.eval(), engine


def _layer_experts(path, moe, num_experts):
    from safetensors import safe_open

    experts = [{} for _ in range(num_experts)]
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():
            match = EXPERT_KEY.match(key)
            if match:
                experts[int(match.group(2))][match.group(3)] = handle.get_tensor(key)
    return experts, moe.act_fn
