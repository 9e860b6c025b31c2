"""Which UNet modules a LoRA can target, known before the model loads.

peft matches a target name against the end of each module's dotted path ("to_q" matches
"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") and only wraps Linear and Conv layers. A typo used to
fail inside peft after the base model had loaded; here the names are checked against an SD 1.x UNet built on the
meta device (shapes only, no memory; every SD 1.x UNet, tiny or full size, has the same module names).
"""

from __future__ import annotations

import functools

from nbhelpers.checks import ParameterError


@functools.lru_cache(maxsize=1)
def unet_targets() -> frozenset:
    """Every dotted suffix of the path of every Linear/Conv module of an SD 1.x UNet."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel()  # the default configuration is SD 1.x's layout
    names = set()
    for path, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            parts = path.split(".")
            names.update(".".join(parts[i:]) for i in range(len(parts)))
    return frozenset(names)


def check(target_modules) -> None:
    from nbhelpers.train.config import UNET_TARGETS

    if set(target_modules) <= set(UNET_TARGETS):
        return  # the defaults: no need to build anything
    known = unet_targets()
    unknown = [t for t in target_modules if t not in known]
    if unknown:
        raise ParameterError("target_modules", ",".join(target_modules),
                             "names of the UNet's Linear/Conv layers; no layer is named " + ", ".join(unknown) +
                             ". Common ones: to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.2, conv1, conv2")
