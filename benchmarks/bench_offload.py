"""Expert offloading: nbhelpers' engine against accelerate's offloading, on the same model and the same weights.

    python benchmarks/bench_offload.py                                   # CPU: bytes moved per token, small model
    python benchmarks/bench_offload.py --device cuda --mixtral-layers 4  # GPU: Mixtral-shaped layers, tokens/s

accelerate's way (`cpu_offload` on each experts module, which is what `dispatch_model` does for modules a device_map
puts on "cpu") copies every expert of a layer to the execution device at every forward. The engine copies only the
experts that are missing from its per-layer cache, quantized. Decode figures are the difference between a run
of `--tokens` new tokens and a run of one (so the prompt's prefill is left out), for both.

On a CPU "moving" to the execution device is a no-op for accelerate (same device), so its bytes are counted as
what its hook loads, which is what would cross PCIe on a GPU; the engine's copies on CPU are real copies.
The GPU run caps memory at 15 GB (a T4's) with random weights shaped like Mixtral-8x7B from
data/configs/mixtral-8x7b.json. Output: one JSON object (also written to --json).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=1000, num_local_experts=8, num_experts_per_tok=2)


def build_model(device: str, mixtral_layers: int | None, seed: int = 0):
    """A Mixtral with random weights on the CPU: Mixtral-8x7B-shaped layers, or a small CPU-sized one."""
    from transformers import MixtralConfig

    from nbhelpers.moe.accounting import meta_model

    if mixtral_layers:
        values = json.loads((ROOT / "data/configs/mixtral-8x7b.json").read_text())
        values["num_hidden_layers"] = mixtral_layers
        config = MixtralConfig(**{k: v for k, v in values.items() if k not in ("architectures", "torch_dtype")})
    else:
        config = MixtralConfig(**SMALL)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = meta_model(config)  # no weights yet: Mixtral-shaped layers are filled one parameter at a time below
    generator_device = device if device == "cuda" else "cpu"  # the GPU draws 45B random numbers in seconds
    generator = torch.Generator(generator_device).manual_seed(seed)
    for name, parameter in list(model.named_parameters()):
        if "norm" in name:
            value = torch.ones(parameter.shape, dtype=dtype)
        else:
            value = (torch.randn(parameter.shape, generator=generator, device=generator_device, dtype=dtype) * 0.02
                     ).cpu()
        module_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(module_name), attribute, torch.nn.Parameter(value, requires_grad=False))
    return model.eval()


def decode_rate(model, prompt, tokens: int, counters) -> dict:
    """Decode-only figures: a run of `tokens` new tokens minus a run of one (which is the prompt's prefill).

    `counters()` returns a tuple of running totals (bytes moved, ...); the result has their decode-only deltas.
    """
    marks, seconds = [], {}
    with torch.no_grad():  # warm-up: first-call allocations and kernel choices are not decoding
        model.generate(prompt, max_new_tokens=1, do_sample=False)
    for new in (1, tokens):
        marks.append(counters())
        _sync()
        start = time.perf_counter()
        with torch.no_grad():
            output = model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        _sync()
        seconds[new] = time.perf_counter() - start
    marks.append(counters())
    one = [b - a for a, b in zip(marks[0], marks[1])]
    long = [b - a for a, b in zip(marks[1], marks[2])]
    deltas = [l - o for l, o in zip(long, one)]
    decode_seconds = seconds[tokens] - seconds[1]
    return {"seconds": round(decode_seconds, 4), "tokens": tokens - 1, "deltas": deltas,
            "bytes_per_token": deltas[0] / (tokens - 1),
            "tokens_per_s": round((tokens - 1) / decode_seconds, 3) if decode_seconds > 0 else None,
            "output": output[0].tolist()}


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_accelerate(model, device: str, prompt, tokens: int) -> dict:
    from accelerate import cpu_offload

    moved = [0]
    for layer in model.model.layers:
        experts = layer.mlp.experts
        nbytes = sum(p.numel() * p.element_size() for p in experts.parameters())
        cpu_offload(experts, execution_device=torch.device(device))  # what dispatch_model does for "cpu" modules
        experts.register_forward_pre_hook(lambda module, args, n=nbytes: moved.__setitem__(0, moved[0] + n))
    _move_non_experts(model, device)
    result = decode_rate(model, prompt, tokens, lambda: (moved[0],))
    result.pop("deltas")
    return result


def _move_non_experts(model, device):
    for module_name, module in model.named_modules():
        if module_name.endswith("mlp.experts"):
            continue
        for name, parameter in list(module.named_parameters(recurse=False)):
            setattr(module, name, torch.nn.Parameter(parameter.to(device), requires_grad=False))
        for name, buffer in list(module.named_buffers(recurse=False)):
            module._buffers[name] = buffer.to(device)


def run_engine(model, device, prompt, tokens, cache_size, quantization, prefetch) -> dict:
    from nbhelpers.moe.offload import offload_experts

    engine = offload_experts(model, cache_size=cache_size, quantization=quantization, prefetch=prefetch,
                             device=device)

    def counters():
        s = engine.stats()
        return s["bytes_h2d"] + s["bytes_d2h"], s["hits"], s["lookups"]

    result = decode_rate(model, prompt, tokens, counters)
    _, hits, lookups = result.pop("deltas")
    stats = engine.stats()
    result.update(hit_rate=round(hits / max(1, lookups), 4), prefetch_precision=stats["prefetch_precision"],
                  expert_mb=round(stats["expert_bytes"] / 1e6, 2),
                  device_expert_gb=round(stats["device_expert_bytes"] / 1e9, 3))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mixtral-layers", type=int, default=None,
                        help="Mixtral-8x7B-shaped layers (default: a small model on CPU, 4 layers on CUDA)")
    parser.add_argument("--cache-size", type=int, default=4)
    parser.add_argument("--quantization", default="auto", help="int2, int3, int4, int8 (HQQ), none; auto: int2 on CUDA")
    parser.add_argument("--no-prefetch", action="store_true")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--memory-cap-gb", type=float, default=15.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU")
    layers = args.mixtral_layers or (4 if args.device == "cuda" else None)
    quantization = {"auto": "int2" if args.device == "cuda" else None, "none": None}.get(args.quantization,
                                                                                          args.quantization)
    if args.device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gb * 1e9 / total))
    torch.manual_seed(0)
    base = build_model(args.device, layers)
    prompt = torch.randint(3, base.config.vocab_size, (1, args.prompt_tokens)).to(args.device)
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "layers": base.config.num_hidden_layers, "hidden": base.config.hidden_size,
              "cache_size": args.cache_size, "quantization": quantization, "prefetch": not args.no_prefetch,
              "decode_tokens": args.tokens - 1}
    baseline = copy.deepcopy(base)
    report["accelerate"] = run_accelerate(baseline, args.device, prompt, args.tokens)
    del baseline
    if args.device == "cuda":
        torch.cuda.empty_cache()
    report["engine"] = run_engine(base, args.device, prompt, args.tokens, args.cache_size, quantization,
                                  not args.no_prefetch)
    same = report["accelerate"].pop("output") == report["engine"].pop("output")
    report["same_tokens"] = same
    report["bytes_ratio"] = round(report["accelerate"]["bytes_per_token"] / max(1.0, report["engine"]["bytes_per_token"]), 2)
    if report["engine"]["tokens_per_s"] and report["accelerate"]["tokens_per_s"]:
        report["speedup"] = round(report["engine"]["tokens_per_s"] / report["accelerate"]["tokens_per_s"], 2)
    if args.device == "cuda":
        report["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        from nbhelpers import persist

        persist.atomic_write_text(args.json, text + "\n")
    return report


if __name__ == "__main__":
    main()
