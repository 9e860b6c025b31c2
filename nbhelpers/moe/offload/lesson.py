"""The steps of 01b_mixtral_offload, one function each, so the notebook's cells stay one or two lines long.

Settings (source, cache size, quantization, answer length) are the `offload` defaults of `nbhelpers.profiles`.
Profiles: `tiny` converts and runs the lab Mixtral-Instruct on the CPU (a device="cpu" cache: real copies, real
counters); `t4` converts mistralai/Mixtral-8x7B-Instruct-v0.1 from the Hub to 2-bit experts on local disk, then
runs it with 4 experts per layer on the GPU. The same functions run in both.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from nbhelpers import checks, rehearsal


def mixtral_config():
    """Mixtral-8x7B's configuration: transformers' MixtralConfig defaults are exactly its numbers."""
    from transformers import MixtralConfig

    return MixtralConfig()


def plan_table(cache_sizes=(2, 3, 4, 5, 6), quantization="int2") -> list[dict]:
    """VRAM and pinned RAM for Mixtral-8x7B at several cache sizes (weights only)."""
    from nbhelpers.moe.offload.budgets import offload_memory_plan

    config = mixtral_config()
    return [{"cache_size": size, **offload_memory_plan(config, size, quantization)} for size in cache_sizes]


def source_folder(source: str, token=None) -> str:
    """A local folder for "tiny:<name>" and "lab:<name>", else the Hub id unchanged."""
    from nbhelpers.loaders import resolve_source
    from nbhelpers.profiles import ModelSpec

    return resolve_source(ModelSpec(source))


def default_folder(source: str, quantization) -> Path:
    """Local disk, never Drive: Mixtral's converted checkpoint (17.3 GB) is larger than a free Drive (15 GB)."""
    from nbhelpers import persist

    name = source.replace(":", "-").replace("/", "--")
    return persist.nbhelpers_cache() / "offload" / f"{name}-{quantization or 'none'}"


def convert(source: str, folder, quantization: str, token=None) -> Path:
    """Convert once: a folder that already holds a finished conversion with the same settings is reused."""
    import json

    from nbhelpers.env import hf_token
    from nbhelpers.moe.offload.convert import FORMAT, convert_checkpoint

    quantization = None if quantization == "none" else quantization
    folder = Path(folder) if str(folder) else default_folder(source, quantization)
    manifest = folder / "offload.json"
    if manifest.exists():
        done = json.loads(manifest.read_text())
        if (done.get("source"), done.get("quantization"), done.get("format")) == (source_folder(source), quantization,
                                                                                  FORMAT):
            print(f"reusing the converted checkpoint in {folder}")
            _refresh_side_files(Path(source_folder(source)), folder)
            return folder
    on_gpu = torch.cuda.is_available()
    return convert_checkpoint(source_folder(source), folder, quantization=quantization,
                              dtype="float16" if on_gpu else "float32", token=token or hf_token(),
                              optimize=not rehearsal.enabled())  # HQQ's fit: ~7 min per 4096x14336 matrix on 2 CPU cores


def _refresh_side_files(source: Path, folder: Path) -> None:
    """A local source's tokenizer may change after its conversion (the rehearsal's stand-in did): the copies in a
    reused conversion follow it. config.json stays: the converted weights were written for it."""
    import filecmp
    import shutil

    from nbhelpers.moe.offload.convert import EXTRA_FILES

    for name in set(EXTRA_FILES) - {"config.json"}:
        if (source / name).is_file() and not ((folder / name).is_file() and filecmp.cmp(source / name, folder / name)):
            shutil.copyfile(source / name, folder / name)


def load(folder, cache_size: int, prefetch: bool = True):
    """(model, tokenizer, engine) from a converted folder."""
    from transformers import AutoTokenizer

    from nbhelpers.moe.offload.load import load_offloaded

    model, engine = load_offloaded(folder, cache_size=cache_size, prefetch=prefetch)
    return model, AutoTokenizer.from_pretrained(folder), engine


def chat(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """One greedy answer through Mixtral's chat template."""
    checks.text("prompt", prompt)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def equivalence(folder, cache_size: int = 1) -> list[dict]:
    """Max |logit difference| between the unmodified tiny model and the engine (CPU only): unquantized with
    prefetch off and on, then HQQ's int4, int3 and int2."""
    from transformers import AutoModelForCausalLM

    from nbhelpers.moe.offload.engine import offload_experts

    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()
    ids = torch.randint(3, reference.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(ids).logits
    rows = []
    for scheme, prefetch in ((None, False), (None, True), ("int4", True), ("int3", True), ("int2", True)):
        model = copy.deepcopy(reference)
        engine = offload_experts(model, cache_size=cache_size, quantization=scheme, prefetch=prefetch, device="cpu")
        with torch.no_grad():
            difference = (model(ids).logits - expected).abs().max().item()
        rows.append({"quantization": scheme or "none", "prefetch": prefetch, "cache_size": cache_size,
                     "max_abs_logit_diff": float(f"{difference:.3g}"),
                     "expert_bytes": engine.stats()["expert_bytes"]})
    return rows


def sweep(folder, tokenizer, prompt: str, max_new_tokens: int = 16, cache_sizes=(1, 2, 4, 8)) -> list[dict]:
    """Hit rate and expert copies per token for each cache size, prefetch off and on (greedy, same prompt).

    Unquantized: which experts move does not depend on how they are stored, only how many bytes each is.
    """
    from transformers import AutoModelForCausalLM

    from nbhelpers.moe.offload.engine import offload_experts

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    rows = []
    for size in cache_sizes:
        for prefetch in (False, True):
            model = copy.deepcopy(base)
            engine = offload_experts(model, cache_size=size, prefetch=prefetch, device="cpu")
            with torch.no_grad():
                model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=tokenizer.eos_token_id)
            stats = engine.stats()
            rows.append({"cache_size": size, "prefetch": prefetch, "hit_rate": stats["hit_rate"],
                         "expert_copies_per_token": round(stats["bytes_moved_per_token"] / stats["expert_bytes"], 3),
                         "prefetch_precision": stats["prefetch_precision"]})
    return rows


def plot_sweep(rows: list[dict], path) -> Path:
    """Hit rate and expert copies per token against cache size, prefetch off and on; saved as PNG."""
    import matplotlib.pyplot as plt

    from nbhelpers import persist

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for prefetch, style in ((False, "o-"), (True, "s--")):
        points = [r for r in rows if r["prefetch"] == prefetch]
        label = "prefetch on" if prefetch else "prefetch off"
        left.plot([r["cache_size"] for r in points], [r["hit_rate"] for r in points], style, label=label)
        right.plot([r["cache_size"] for r in points], [r["expert_copies_per_token"] for r in points], style,
                   label=label)
    left.set(xlabel="experts kept on the device per layer", ylabel="hit rate", ylim=(0, 1.05))
    right.set(xlabel="experts kept on the device per layer", ylabel="expert copies per token (in + out)")
    left.legend()
    fig.tight_layout()
    from nbhelpers import rehearsal

    rehearsal.label_figure(fig)  # a rehearsal's plot says it shows noise
    with persist.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.show()
    plt.close(fig)
    return Path(path)
