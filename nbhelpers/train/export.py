"""What a finished run leaves behind, each file written atomically:

- `pytorch_lora_weights.safetensors`: diffusers format; `pipe.load_lora_weights(output_dir)` loads it.
- `lora_kohya.safetensors`: the kohya-ss key format that AUTOMATIC1111 and ComfyUI load from their `models/Lora`
  folder (`lora_unet_<module>.lora_down.weight`, `.lora_up.weight`, `.alpha`; text encoders `lora_te_`, for SDXL
  `lora_te1_` and `lora_te2_`).
- `unet/` instead of both, for a full fine-tune (a complete UNet in diffusers format).
- `README.md`: a model card with the settings, the losses and how to load the result.
- `losses.json`: the loss of every optimizer step.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from nbhelpers import persist

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"
CARD_FILE = "README.md"


def peft_layers(model) -> dict:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def save_diffusers_lora(output, unet, text_encoders: dict | None = None, family: str = "sd") -> Path:
    """The LoRA of `unet` (and of the trained text encoders, by name: "text_encoder", SDXL's "text_encoder_2") in
    diffusers' file format, with each LoRA's config (rank, alpha, targets) in the file's metadata so that loading
    restores the same scale. `StableDiffusionXLPipeline.load_lora_weights` reads the SDXL file."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(peft_layers(unet)),
              "unet_lora_adapter_metadata": unet.peft_config["default"].to_dict()}
    for name, encoder in (text_encoders or {}).items():
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(peft_layers(encoder))
        layers[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
    pipeline = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    target = Path(output) / LORA_FILE
    # diffusers writes into a folder: a hidden one beside the target, then one rename publishes the file.
    with tempfile.TemporaryDirectory(dir=output, prefix=".lora-export-") as tmp:
        pipeline.save_lora_weights(tmp, weight_name=LORA_FILE, safe_serialization=True, **layers)
        os.replace(Path(tmp) / LORA_FILE, target)
    return target


KOHYA_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te", "sdxl:text_encoder": "lora_te1",
                  "sdxl:text_encoder_2": "lora_te2"}


def to_kohya(unet_layers: dict, text_encoder_layers: dict | None, alpha: float, family: str = "sd") -> dict:
    """PEFT key names -> kohya-ss names. Module paths keep diffusers' names with dots turned into underscores;
    lora_A is the "down" matrix, lora_B the "up" one; each module gets its alpha (scale = alpha / rank).
    `text_encoder_layers`: the layers of one encoder (SD 1.x), or a dict of them by encoder name (SDXL: te1, te2)."""
    import torch

    encoders = text_encoder_layers or {}
    if encoders and not all(isinstance(v, dict) for v in encoders.values()):
        encoders = {"text_encoder": encoders}
    parts = [("lora_unet", unet_layers)] + [
        (KOHYA_PREFIXES[f"sdxl:{name}" if family == "sdxl" else name], layers) for name, layers in encoders.items()]
    converted = {}
    for prefix, layers in parts:
        for key, tensor in layers.items():
            module, _, kind = key.rpartition(".lora_")  # "down_blocks.1...to_q", "A.weight"
            name = prefix + "_" + module.replace(".", "_")
            converted[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor.detach().to(torch.float16)
            converted[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return converted


def save_kohya(output, unet, text_encoders: dict | None, config) -> Path:
    from safetensors.torch import save_file

    family = config.family
    state = to_kohya(peft_layers(unet), {name: peft_layers(m) for name, m in (text_encoders or {}).items()},
                     config.lora_alpha, family)
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(config.rank),
                "ss_network_alpha": str(config.lora_alpha),
                "ss_base_model_version": "sdxl_base_v1-0" if family == "sdxl" else "sd_v1",
                "ss_output_name": Path(config.output).name, "ss_training_comment": "made with nbhelpers.train"}
    target = Path(output) / KOHYA_FILE
    with persist.atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return target


def save_full_unet(output, unet) -> Path:
    target = Path(output) / "unet"
    with persist.atomic_path(target) as tmp:
        unet.save_pretrained(str(tmp), safe_serialization=True)
    return target


def model_card(config, base_model: str, losses: list[dict], seconds: float) -> str:
    first, last = (losses[0]["loss"], losses[-1]["loss"]) if losses else (float("nan"), float("nan"))
    kind = "DreamBooth " + ("full fine-tune" if config.full_finetune else "LoRA") if config.mode == "dreambooth" else "LoRA"
    tags = ["stable-diffusion-xl" if config.family == "sdxl" else "stable-diffusion", "text-to-image", "diffusers",
            "nbhelpers"] + (["lora"] if not config.full_finetune else [])
    tags += ["dreambooth"] if config.mode == "dreambooth" else []
    rows = "\n".join(f"| {name} | {_cell(value)} |" for name, value in config.settings().items()
                     if name not in ("output", "progress", "class_data"))
    prompt = config.instance_prompt or "(your prompt)"
    # User text is quoted, never pasted: JSON strings are valid YAML and Python string literals, so a prompt holding a
    # newline, a quote or "license: mit" stays one value instead of adding keys to the front matter or breaking code.
    load = (f'pipe.load_lora_weights({json.dumps(config.output)}, weight_name="{LORA_FILE}")\n'
            f'pipe({json.dumps(prompt)}, cross_attention_kwargs={{"scale": 1.0}})'
            if not config.full_finetune else
            f'pipe.unet = UNet2DConditionModel.from_pretrained({json.dumps(config.output + "/unet")}, use_safetensors=True)')
    front = "\n".join(["---", f"base_model: {_yaml_scalar(base_model)}", "library_name: diffusers", "tags:"]
                      + [f"- {t}" for t in tags]
                      + ([f"instance_prompt: {json.dumps(config.instance_prompt)}"] if config.instance_prompt else [])
                      + ["---"])
    from nbhelpers import rehearsal

    noise = f"\n**{rehearsal.NOISE}**: the base model's weights were random; these weights are noise.\n" \
        if config.random_weights else ""
    return f"""{front}

# {kind} trained with nbhelpers.train
{noise}
Base model: `{base_model}`. {config.steps} steps in {seconds:.0f} s; loss {first:.4f} at the first step,
{last:.4f} at the last (one noisy sample per step: read the curve, not single values).

## Use it

```python
{load}
```

AUTOMATIC1111 / ComfyUI: copy `{KOHYA_FILE}` into `models/Lora` and write `<lora:{Path(config.output).name}:1>` in
the prompt (A1111) or use a LoraLoader node (ComfyUI).

## Training settings

| setting | value |
|---|---|
{rows}
"""


def _yaml_scalar(value: str) -> str:
    """Plain when it is a simple name (a Hub id, a path: what the Hub's cards show), else a double-quoted (JSON)
    string. The prompt is always quoted: a prompt such as "yes" or "1" is not a YAML boolean or number."""
    return value if re.fullmatch(r"[A-Za-z0-9_./][A-Za-z0-9_./ -]*[A-Za-z0-9_./]|[A-Za-z0-9_./]", value) else json.dumps(value)


def _cell(value) -> str:
    """A value in one markdown table cell: no line breaks, no column separators."""
    return " ".join(str(value).split()).replace("|", "\\|")


def write_outputs(output, unet, models: dict, config, base_model: str, losses: list[dict], seconds: float) -> dict:
    """All result files; returns their paths. `models`: the trained models by name (their text encoders' LoRAs
    are exported with the UNet's)."""
    files = {}
    text_encoders = {name: model for name, model in models.items() if name.startswith("text_encoder")}
    if config.full_finetune:
        files["unet"] = save_full_unet(output, unet)
    else:
        files["lora"] = save_diffusers_lora(output, unet, text_encoders, config.family)
        files["kohya"] = save_kohya(output, unet, text_encoders, config)
    files["losses"] = persist.atomic_write_json(Path(output) / "losses.json", losses)
    files["card"] = persist.atomic_write_text(Path(output) / CARD_FILE, model_card(config, base_model, losses, seconds))
    return files
