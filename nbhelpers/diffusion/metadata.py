"""Settings inside every PNG, in the text chunk Automatic1111 writes (`parameters`), so any A1111-compatible tool
(A1111's "PNG Info" tab, Civitai, ComfyUI's loaders) reads them back and the image can be reproduced anywhere.

The text has up to three parts:
    a photo of a cat, (golden hour:1.2)
    Negative prompt: blurry, lowres
    Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: stable-diffusion-v1-5
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nbhelpers import persist

KEY = "parameters"
NEGATIVE = "Negative prompt:"
# A1111's pattern for `Key: value` pairs; values holding commas are written as JSON strings.
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def format_parameters(prompt: str, negative_prompt: str = "", **settings) -> str:
    """The A1111 `parameters` text. `settings` keys are A1111 names ("Steps", "Sampler", "CFG scale", ...)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE} {negative_prompt}")
    pairs = []
    for key, value in settings.items():
        if value is None:
            continue
        value = str(value)
        if any(ch in value for ch in ',:\n"'):
            value = json.dumps(value)
        pairs.append(f"{key}: {value}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """The reverse of `format_parameters`: {"Prompt", "Negative prompt", "Steps", ...}; numbers become numbers."""
    lines = text.strip().split("\n")
    settings_line = lines.pop() if lines and len(_PAIR.findall(lines[-1])) >= 3 else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE):].lstrip()
        (negative if in_negative else prompt).append(line)
    result = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PAIR.findall(settings_line):
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        result[key] = _number(value)
    # Newer A1111 writes "Sampler: DPM++ 2M, Schedule type: Karras": fold it back into the classic name.
    if result.get("Schedule type") == "Karras" and not str(result.get("Sampler", "")).endswith("Karras"):
        result["Sampler"] = f"{result['Sampler']} Karras"
    return result


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def save_png(image, path, parameters: str) -> Path:
    """Save `image` as PNG with its `parameters` chunk, atomically (never a half-written file)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(KEY, parameters)
    with persist.atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def read_png(path) -> dict:
    """The parsed `parameters` of a PNG written by nbhelpers or A1111; {} when it has none."""
    from PIL import Image

    with Image.open(path) as image:
        text = image.info.get(KEY) or getattr(image, "text", {}).get(KEY)
    return parse_parameters(text) if text else {}
