"""Random-weight checkpoints of the real architectures, written tensor by tensor, so `from_pretrained` loads them
exactly as it would load the downloaded model.

The model is built on the meta device (shapes, no memory); each tensor is then drawn and written to a safetensors
shard of at most SHARD_BYTES. So building Mixtral's two 4096-wide layers (6.2 GB) never holds more than one shard.
Weights are N(0, 1/fan_in) (activations keep their scale through the layers, no overflow in 16 bits), norms 1,
biases 0. Folders are cached in `<nbhelpers cache>/rehearsal/<config>`; a finished folder has rehearsal.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nbhelpers import persist
from nbhelpers.paths import data_dir
from nbhelpers.rehearsal.sources import Source, source

SHARD_BYTES = 1 << 30
SEED = 15
STAND_IN_TOKENIZER = ("stand-in tokenizer: a 512-token byte-level BPE built offline (nbhelpers.tiny), padded to the "
                      "model's vocabulary with noise tokens that decode to ' noise<id>'; NOT the model's own: token "
                      "ids and chat template differ from the real model's")
NOISE_PREFIX = "noise"
# A generic role template for the stand-in (Granite and OLMoE templates accept a system role; Mixtral's does not).
ROLE_TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def folder_for(model_id: str) -> Path:
    """The local folder of `model_id`'s random-weight checkpoint, built on first use."""
    spec = source(model_id)
    folder = persist.nbhelpers_cache() / "rehearsal" / spec.config
    if (folder / "rehearsal.json").is_file():
        if spec.kind == "llm":
            _refresh_stand_in(folder)
        return folder
    print(f"rehearsal: building random weights of {model_id} from data/configs/{spec.config} (once)")
    with persist.atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        build = {"llm": _build_llm, "pipeline": _build_pipeline, "clip": _build_clip}[spec.kind]
        notes = build(spec, tmp)
        persist.atomic_write_json(tmp / "rehearsal.json", {
            "model": model_id, "config": spec.config, "dtype": spec.dtype, "cuts": spec.cuts,
            "weights": "random, seeded: outputs are noise", **notes})
    return folder


def _init(name: str, shape, dtype, generator):
    import torch

    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 0:  # CLIP's logit scale: its published initial value, log(1 / 0.07)
        return torch.tensor(math.log(1 / 0.07), dtype=dtype)
    if len(shape) == 1:  # norm scales (and the few 1-D weights): identity
        return torch.ones(shape, dtype=dtype)
    fan_in = math.prod(shape[1:]) if len(shape) == 4 else shape[-1]  # conv (out, in, k, k); linear and fused experts
    return (torch.randn(shape, generator=generator) / math.sqrt(fan_in)).to(dtype)


def write_random_state(model, folder: Path, dtype: str, prefix: str = "model") -> int:
    """Draw every parameter and persistent buffer of the meta-device `model` into safetensors shards (with an
    index when there are several, as the Hub lays them out), one shard in memory at a time. Returns the bytes."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    item = torch.empty((), dtype=torch_dtype).element_size()
    generator = torch.Generator().manual_seed(SEED)
    state_keys = set(model.state_dict())
    named = [(n, tuple(p.shape)) for n, p in model.named_parameters()]  # a tied copy is listed once
    named += [(n, tuple(b.shape)) for n, b in model.named_buffers() if n in state_keys]
    plan, size = [[]], 0  # shard membership from the shapes alone, so file names can say "-of-N"
    for name, shape in named:
        if size >= SHARD_BYTES:
            plan.append([])
            size = 0
        plan[-1].append((name, shape))
        size += math.prod(shape) * item
    total, weight_map = 0, {}
    for index, members in enumerate(plan):
        file = f"{prefix}.safetensors" if len(plan) == 1 else f"{prefix}-{index + 1:05d}-of-{len(plan):05d}.safetensors"
        shard = {name: _init(name, shape, torch_dtype, generator) for name, shape in members}
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map.update({name: file for name in shard})
        del shard
    if len(plan) > 1:
        persist.atomic_write_json(folder / f"{prefix}.safetensors.index.json",
                                  {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total


def _llm_config(spec: Source) -> dict:
    values = json.loads((data_dir() / "configs" / f"{spec.config}.json").read_text())
    return {**values, **spec.cuts, "torch_dtype": spec.dtype, "dtype": spec.dtype}


def _stand_in_for(values: dict):
    from nbhelpers import tiny

    tokenizer = tiny.stand_in_tokenizer(mixtral_template=values["model_type"] == "mixtral")
    if values["model_type"] != "mixtral":
        tokenizer.chat_template = ROLE_TEMPLATE
    tokenizer.model_max_length = values["max_position_embeddings"]  # the model's limit, not the stand-in's 512
    return noise_padded(tokenizer, values["vocab_size"])


def _refresh_stand_in(folder: Path) -> None:
    """A checkpoint built before the stand-in covered the vocabulary gets the current stand-in (the weights stay)."""
    notes = json.loads((folder / "rehearsal.json").read_text())
    if notes.get("tokenizer") == STAND_IN_TOKENIZER:
        return
    values = json.loads((folder / "config.json").read_text())
    _stand_in_for(values).save_pretrained(folder)
    persist.atomic_write_json(folder / "rehearsal.json", {**notes, "tokenizer": STAND_IN_TOKENIZER})


def _build_llm(spec: Source, folder: Path) -> dict:
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    values = _llm_config(spec)
    tokenizer = _stand_in_for(values)
    tokenizer.save_pretrained(folder)
    model_values = {k: v for k, v in values.items() if k not in ("architectures", "model_type", "_name_or_path")}
    config = transformers.AutoConfig.for_model(values["model_type"], **model_values)
    config.architectures = values.get("architectures")
    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    config.save_pretrained(folder)
    # The stand-in's end token, so generation can stop; the real ids index another vocabulary.
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=tokenizer.bos_token_id).save_pretrained(folder)
    weights = write_random_state(model, folder, spec.dtype)
    return {"tokenizer": STAND_IN_TOKENIZER, "weights_bytes": weights,
            "parameters": sum(p.numel() for p in model.parameters())}


def noise_padded(tokenizer, vocab_size: int):
    """The stand-in with ids 512..vocab_size-1 added as tokens that decode to " noise<id>".

    A random model samples ids from its whole vocabulary (32,000-50,304); left unknown to the 512-token stand-in they
    decode to nothing, and a streamed reply has no text to print. No merge produces these tokens, so encoding is
    unchanged; only what the model says becomes visible, and visibly noise."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    layout = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = layout["model"]["vocab"]
    # "\u0120" is the byte-level alphabet's space, so each noise token decodes with a space before it.
    vocab.update({f"\u0120{NOISE_PREFIX}{index}": index for index in range(len(vocab), vocab_size)})
    padded = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(layout)), unk_token=tokenizer.unk_token,
        bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, pad_token=tokenizer.pad_token,
        model_max_length=tokenizer.model_max_length)
    padded.chat_template = tokenizer.chat_template
    return padded


SCHEDULERS = {  # the schedulers the real repositories ship (scheduler/scheduler_config.json)
    "sd": {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
           "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
           "clip_sample": False, "trained_betas": None},
    "sdxl": {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
             "interpolation_type": "linear", "prediction_type": "epsilon", "timestep_spacing": "leading",
             "use_karras_sigmas": False, "trained_betas": None},
}


def _build_pipeline(spec: Source, folder: Path) -> dict:
    from nbhelpers import tiny
    from nbhelpers.plan import configs

    index = json.loads((configs.model_folder(spec.config) / "model_index.json").read_text())
    xl = "XL" in spec.pipeline
    components, parameters, weights = {}, {}, 0
    for name, (library, class_name) in configs.component_classes(spec.config).items():
        values = {**configs.component_config(spec.config, name), **spec.cuts.get(name, {})}
        module = configs.build(library, class_name, values, device="meta")
        (folder / name).mkdir()
        if library == "diffusers":
            module.save_config(folder / name)
            prefix = "diffusion_pytorch_model"
        else:
            module.config.save_pretrained(folder / name)
            prefix = "model"
        weights += write_random_state(module, folder / name, spec.dtype, prefix)
        parameters[name] = sum(p.numel() for p in module.parameters())
        components[name] = [library, class_name]
    # The real CLIP tokenizer (its vocabulary ships in data/clip); SDXL's second one pads with "!" as published.
    tiny.clip_tokenizer().save_pretrained(folder / "tokenizer")
    components["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if xl:
        second = tiny.clip_tokenizer()
        second.pad_token = "!"
        second.save_pretrained(folder / "tokenizer_2")
        components["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    scheduler = dict(SCHEDULERS["sdxl" if xl else "sd"])
    (folder / "scheduler").mkdir()
    persist.atomic_write_json(folder / "scheduler" / "scheduler_config.json", scheduler)
    components["scheduler"] = ["diffusers", scheduler["_class_name"]]
    if xl:
        components["force_zeros_for_empty_prompt"] = True
    else:
        components.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    persist.atomic_write_json(folder / "model_index.json", {
        "_class_name": spec.pipeline, "_diffusers_version": index.get("_diffusers_version", "0.30.0"), **components})
    return {"tokenizer": "the real CLIP tokenizer (data/clip)", "weights_bytes": weights, "parameters": parameters}


def _build_clip(spec: Source, folder: Path) -> dict:
    """A CLIPModel with the processor the real repositories ship: CLIP's image preprocessing (224 px, OpenAI's mean
    and std: CLIPImageProcessor's defaults) and the real CLIP tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from nbhelpers import tiny

    values = json.loads((data_dir() / "configs" / f"{spec.config}.json").read_text())
    config = CLIPConfig(text_config=values["text_config"], vision_config=values["vision_config"],
                        projection_dim=values["projection_dim"],
                        logit_scale_init_value=values["logit_scale_init_value"])
    config.architectures = values["architectures"]
    with torch.device("meta"):
        model = CLIPModel(config)
    config.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tiny.clip_tokenizer()).save_pretrained(folder)
    weights = write_random_state(model, folder, spec.dtype)
    return {"tokenizer": "the real CLIP tokenizer (data/clip)", "weights_bytes": weights,
            "parameters": sum(p.numel() for p in model.parameters())}
