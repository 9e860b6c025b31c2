"""Getting a big MoE checkpoint onto a small machine: convert it shard by shard into a compact checkpoint.

`convert_checkpoint(source, out_dir, quantization="int2")` reads a safetensors checkpoint (a local folder, or a Hub
id fetched one shard at a time and deleted after use) tensor by tensor with `safe_open`, quantizes each expert as
soon as its matrices are complete, and writes one file per decoder layer as soon as the layer is complete. RAM
holds at most a layer or two, never the model. The quantizer runs on the GPU when there is one (milliseconds per
matrix instead of seconds). `load.load_offloaded` loads the result into the engine; `budgets` says how much disk
and RAM the conversion needs.

Layout written: `config.json`, tokenizer files, `offload.json` (format, quantization, files), `layer-00000.safetensors`
(that layer's attention, norms, router, and `...experts.<e>.<part>` tensors), `rest.safetensors` (embeddings, final
norm, LM head).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from nbhelpers import checks, dtypes, persist
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
# an expert tensor of the written layout: layer, expert, part ("gate_up.q", "down.scale", ...)
EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(.+)$")


def convert_checkpoint(source, out_dir, quantization="int2", group_size=None, dtype="float16", device=None,
                       token=None, keep_shards: bool = False, progress: bool = True, optimize: bool = True) -> Path:
    """Write a compact checkpoint of `source` (local folder or Hub id) into `out_dir`; returns the folder."""
    quant.check_scheme(quantization, group_size)
    dtype = None if dtype is None else dtypes.name(dtype)  # None keeps each tensor's stored dtype
    checks.text("source", str(source))
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reader = _Reader(source, token)
    config = json.loads(reader.file("config.json").read_text())
    checks.choice("model_type", config.get("model_type"), CONVERTIBLE)
    codec = ExpertCodec(quantization, group_size, storage_dtype=dtypes.to_torch(dtype), optimize=optimize)
    writer = _LayerWriter(config, codec, dtypes.to_torch(dtype), device, reader.keys())
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
