"""Getting a big MoE checkpoint onto a small machine: convert it shard by shard, then load it into the engine.

`convert_checkpoint(source, out_dir, quantization="int2")` reads a safetensors checkpoint (a local folder, or a Hub
id fetched one shard at a time and deleted after use) tensor by tensor with `safe_open`, quantizes each expert as
soon as its matrices are complete, and writes one file per decoder layer as soon as the layer is complete. RAM
holds at most a layer or two, never the model. `load_offloaded(out_dir, ...)` builds the model on the meta device,
loads the non-expert weights straight to the GPU and hands the experts to the engine: the 16-bit experts are never
materialized.

Layout written: `config.json`, tokenizer files, `offload.json` (format, quantization, files), `layer-00000.safetensors`
(that layer's attention, norms, router, and `...experts.<e>.<part>` tensors), `rest.safetensors` (embeddings, final
norm, LM head).

Mixtral-8x7B-Instruct on Colab (computed by `conversion_budget`, int2 with groups of 64, non-experts in fp16):
the output is 17.3 GB (14.1 GB experts + 3.2 GB rest), the largest Hub shard ~5 GB, so ~22.3 GB of local disk at
the peak (Colab has ~70 GB free; a free Drive's 15 GB cannot hold the result: keep it on local disk); RAM peaks at
7.3 GB in the worst case (one layer of 16-bit experts waiting across a shard boundary 2.8 GB, two pending output
layers 1.1 GB, float32 quantizer workspace 1.9 GB, ~1.5 GB for Python and torch) out of 12.7 GB. The quantizer
runs on the GPU when there is one (milliseconds per matrix instead of seconds).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from nbhelpers import checks, persist
from nbhelpers.moe.offload import quant, support
from nbhelpers.moe.offload.experts import ExpertCodec

FORMAT = 2  # 1: our own int2/int4 packing (before HQQ); 2: HQQ's packing, axis 1
CONVERTIBLE = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")
EXTRA_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")
LAYER = re.compile(r"^model\.layers\.(\d+)\.")
# per-expert names of the Hub checkpoints (transformers 4 layout): Mixtral w1/w3/w2, the others gate/up/down
SPLIT_EXPERT = re.compile(r"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(\d+)\."
                          r"(w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
FUSED_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.experts\.(gate_up_proj|down_proj)$")
ROLE = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(.+)$")
DTYPES = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def convert_checkpoint(source, out_dir, quantization="int2", group_size=None, dtype="float16", device=None,
                       token=None, keep_shards: bool = False, progress: bool = True, optimize: bool = True) -> Path:
    """Write a compact checkpoint of `source` (local folder or Hub id) into `out_dir`; returns the folder."""
    quant.check_scheme(quantization, group_size)
    checks.choice("dtype", dtype, DTYPES)
    checks.text("source", str(source))
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reader = _Reader(source, token)
    config = json.loads(reader.file("config.json").read_text())
    checks.choice("model_type", config.get("model_type"), CONVERTIBLE)
    codec = ExpertCodec(quantization, group_size, storage_dtype=DTYPES[dtype], optimize=optimize)
    writer = _LayerWriter(config, codec, DTYPES[dtype], device, reader.keys())
    from tqdm.auto import tqdm

    with persist.atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        writer.folder = tmp
        for shard in tqdm(reader.shards(), desc="shards", disable=not progress):
            path = reader.fetch(shard)
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    writer.add(key, handle.get_tensor(key))
            if not keep_shards:
                reader.discard(shard, path)
        writer.finish()
        for name in EXTRA_FILES:
            extra = reader.file(name, required=False)
            if extra is not None:
                shutil.copyfile(extra, tmp / name)
        persist.atomic_write_json(tmp / "offload.json", {
            "format": FORMAT, "quantizer": _quantizer_name(codec.quantization), "source": str(source),
            "model_type": config["model_type"], "quantization": codec.quantization, "group_size": codec.group_size,
            "dtype": dtype, "num_experts": writer.num_experts, "layers": writer.written, "bytes": writer.bytes_written})
    return out_dir


def _quantizer_name(quantization) -> str | None:
    if quantization is None:
        return None
    from importlib.metadata import version

    return f"hqq {version('hqq')}"


class _Reader:
    """The files of a checkpoint: from a local folder, or from the Hub one file at a time."""

    def __init__(self, source, token):
        self.source, self.token = str(source), token
        self.local = Path(self.source).is_dir()
        self.download_dir = None
        index = self.file("model.safetensors.index.json", required=False)
        if index is not None:
            self.weight_map = json.loads(index.read_text())["weight_map"]
        elif self.local:
            from safetensors import safe_open

            self.weight_map = {}
            for path in sorted(Path(self.source).glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as handle:
                    self.weight_map.update({key: path.name for key in handle.keys()})
        else:
            self.weight_map = None  # a one-file Hub checkpoint: keys known once downloaded
        if self.weight_map == {}:
            raise checks.ParameterError("source", self.source, "a folder or Hub id with .safetensors weights")

    def file(self, name, required=True):
        if self.local:
            path = Path(self.source) / name
            if path.exists():
                return path
            if required:
                raise checks.ParameterError("source", self.source, f"a checkpoint folder containing {name}")
            return None
        from huggingface_hub import hf_hub_download

        from nbhelpers.access import HubAccessError, hub_access

        try:
            with hub_access(self.source):  # Mixtral-Instruct is gated: say how to get access, even for optional files
                return Path(hf_hub_download(self.source, name, token=self.token, local_dir=self._downloads()))
        except HubAccessError:
            raise
        except Exception:
            if required:
                raise
            return None

    def _downloads(self) -> Path:
        if self.download_dir is None:
            self.download_dir = persist.nbhelpers_cache() / "shards" / self.source.replace("/", "--")
        return self.download_dir

    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values())) if self.weight_map else ["model.safetensors"]

    def keys(self):
        return None if self.weight_map is None else list(self.weight_map)

    def fetch(self, shard: str) -> Path:
        return self.file(shard)

    def discard(self, shard: str, path: Path) -> None:
        if not self.local:  # a downloaded shard has served its purpose: free the disk for the next one
            path.unlink(missing_ok=True)


class _LayerWriter:
    """Collects tensors per decoder layer; quantizes experts as they complete; writes a layer when it is whole."""

    def __init__(self, config, codec, dtype, device, keys):
        self.codec, self.dtype, self.device = codec, dtype, device
        self.rename = config["model_type"] == "mixtral"  # transformers 5 calls Mixtral's block `mlp`
        self.num_experts = support.expert_count(config)
        self.expected = {}  # layer -> number of source keys still to come
        for key in keys or ():
            layer = self._layer(key)
            self.expected[layer] = self.expected.get(layer, 0) + 1
        self.pending = {}  # layer -> {name: tensor} ready to write
        self.parts = {}  # (layer, expert) -> {"gate"/"up"/"down": tensor} waiting for the other matrices
        self.written, self.bytes_written, self.folder = {}, 0, None

    @staticmethod
    def _layer(key):
        match = LAYER.match(key)
        return int(match.group(1)) if match else "rest"

    def add(self, key: str, tensor: torch.Tensor) -> None:
        layer = self._layer(key)
        bucket = self.pending.setdefault(layer, {})
        split, fused = SPLIT_EXPERT.match(key), FUSED_EXPERTS.match(key)
        if split:
            expert = int(split.group(2))
            parts = self.parts.setdefault((layer, expert), {})
            parts[ROLE[split.group(3)]] = tensor
            if "gate" in parts and "up" in parts:
                self._store(bucket, layer, expert, "gate_up", torch.cat([parts.pop("gate"), parts.pop("up")], 0))
            if "down" in parts:
                self._store(bucket, layer, expert, "down", parts.pop("down"))
            if not parts:
                self.parts.pop((layer, expert))
        elif fused:
            name = "gate_up" if fused.group(2) == "gate_up_proj" else "down"
            for expert in range(tensor.shape[0]):
                self._store(bucket, layer, expert, name, tensor[expert])
        else:
            name = key.replace(".block_sparse_moe.", ".mlp.") if self.rename else key
            bucket[name] = tensor.to(self.dtype) if self.dtype and tensor.is_floating_point() else tensor
        if layer in self.expected:
            self.expected[layer] -= 1
            if self.expected[layer] == 0:
                self._write(layer)

    def _store(self, bucket, layer, expert, name, weight):
        encoded = self.codec.encode_one(name, weight.to(self.device))
        for part, tensor in encoded.items():
            bucket[f"model.layers.{layer}.mlp.experts.{expert}.{part}"] = tensor.cpu()

    def _write(self, layer) -> None:
        from safetensors.torch import save_file

        tensors = self.pending.pop(layer, {})
        name = "rest.safetensors" if layer == "rest" else f"layer-{layer:05d}.safetensors"
        with persist.atomic_path(self.folder / name) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        self.written[str(layer)] = name
        self.bytes_written += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self) -> None:
        if self.parts:
            raise ValueError(f"incomplete experts in the checkpoint: {sorted(self.parts)[:4]}")
        for layer in list(self.pending):  # one-file Hub checkpoints: no index told us when layers end
            self._write(layer)


# -- loading ------------------------------------------------------------------------------------------------
def load_offloaded(folder, cache_size: int = 4, prefetch: bool = True, device=None, exclusive: bool = True,
                   dtype=None, compile_dequant=None):
    """(model, engine) from a folder written by `convert_checkpoint`; the experts go straight into the caches."""
    from nbhelpers.moe.offload import engine as engine_module

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
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights():  # parameters on the meta device, buffers (rotary tables) real
        model = AutoModelForCausalLM.from_config(config)
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
                    state[key] = tensor.to(device=device, dtype=DTYPES[dtype] or tensor.dtype)
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


# -- budgets --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterSplit:
    rest: int  # parameters that are not experts (attention, norms, routers, embeddings)
    experts: int  # parameters of all experts
    per_expert: int
    count: int  # experts per MoE layer
    layers: int  # MoE layers


def parameter_split(config) -> ParameterSplit:
    """Where a model's parameters are, counted from its config on the meta device."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    total = sum(p.numel() for p in model.parameters())
    layers = sum(1 for n, _ in model.named_parameters() if n.endswith("experts.down_proj"))
    count = support.expert_count(config)
    return ParameterSplit(total - experts, experts, experts // (layers * count), count, layers)


def memory_bytes(config, cache_size: int, quantization="int2", group_size=None, exclusive: bool = True,
                 dtype_bytes: int = 2) -> dict:
    """Bytes of weights the engine holds for `cache_size` experts per layer: on the GPU (the non-expert weights,
    the cached experts plus the spare buffer of exclusive mode, one dequantized expert as workspace) and in
    pinned host memory (the other experts). The planner (`nbhelpers plan`) uses the same figures."""
    split = parameter_split(config)
    count, layers = split.count, split.layers
    expert = split.per_expert * quant.bits_per_weight(quantization, group_size, dtype_bytes) / 8
    on_device = layers * (cache_size + (1 if exclusive and cache_size < count else 0))
    on_host = layers * (count - cache_size) if exclusive else layers * count
    return {"expert": expert, "gpu_rest": split.rest * dtype_bytes, "gpu_experts": on_device * expert,
            "gpu_workspace": split.per_expert * dtype_bytes if quantization else 0, "ram_pinned": on_host * expert}


def memory_plan(config, cache_size: int, quantization="int2", group_size=None, exclusive: bool = True,
                dtype_bytes: int = 2) -> dict:
    """GB of VRAM and of host RAM the engine needs for `cache_size` experts per layer (weights only)."""
    b = memory_bytes(config, cache_size, quantization, group_size, exclusive, dtype_bytes)
    gb = 1e9
    return {"expert_mb": round(b["expert"] / 1e6, 1),
            "vram_gb": round((b["gpu_rest"] + b["gpu_experts"] + b["gpu_workspace"]) / gb, 2),
            "vram_experts_gb": round(b["gpu_experts"] / gb, 2), "vram_rest_gb": round(b["gpu_rest"] / gb, 2),
            "ram_pinned_gb": round(b["ram_pinned"] / gb, 2)}


def conversion_budget(config, quantization="int2", group_size=None, dtype_bytes: int = 2, source_bytes: int = 2,
                      largest_shard_gb: float = 5.0, baseline_gb: float = 1.5) -> dict:
    """Disk and RAM needed by `convert_checkpoint` (computed, not measured): see the module docstring."""
    split = parameter_split(config)
    rest, expert_params, per_expert, layers = split.rest, split.experts, split.per_expert, split.layers
    bits = quant.bits_per_weight(quantization, group_size, dtype_bytes)
    out_experts = expert_params * bits / 8
    out_rest = rest * dtype_bytes
    layer_out = out_experts / layers + rest * dtype_bytes / layers
    raw_layer_experts = expert_params / layers * source_bytes  # worst case: a layer split across two shards
    workspace = per_expert / 3 * 2 * 4 * 4  # the gate_up matrix in float32, ~4 live temporaries in the quantizer
    gb = 1e9
    return {"output_gb": round((out_experts + out_rest) / gb, 2), "experts_gb": round(out_experts / gb, 2),
            "rest_gb": round(out_rest / gb, 2), "peak_disk_gb": round((out_experts + out_rest) / gb +
                                                                      largest_shard_gb, 2),
            "peak_ram_gb": round(baseline_gb + (raw_layer_experts + 2 * layer_out + workspace) / gb, 2)}
