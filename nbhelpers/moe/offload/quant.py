"""Group-wise affine quantization of expert weights (int8 / int4 / int2), with HQQ-style zero-point refinement.

Why self-written and not a library: bitsandbytes has no 2-bit format and skips fused 3D expert tensors in
transformers 5 (bitsandbytes #1849); hqq and optimum-quanto are not installed here and pull in compiled extras.
What Mixtral on a free T4 needs is small: the 45.1B expert parameters must fit in ~15 GB of VRAM plus what is
left of ~12.7 GB of RAM. At 4 bits (+0.5 for group metadata) they take 25.4 GB: too much. At 2 bits with a
scale and a zero per group of 64 (2.5 bits per weight) they take 14.1 GB, 55 MB per expert.

The format: a weight (out, in) is cut into groups of `group_size` along `in`; each group keeps a float16 scale
and zero, and the weight is `(q - zero) * scale` with q in [0, 2**bits - 1]. The zero point is refined with the
half-quadratic solver of HQQ (Badri & Shaji 2023): a few proximal steps that fit the zero to a sparse (l_p, p<1)
error instead of the min/max rule, which matters most at 2 bits. Dequantization is a handful of torch ops
(unpack, subtract, multiply), so it runs on any device; on CUDA it can be compiled into one kernel.
"""

from __future__ import annotations

import torch

from nbhelpers.checks import ParameterError

BITS = {"int8": 8, "int4": 4, "int2": 2}
SCHEMES = (None,) + tuple(BITS)
DEFAULT_GROUP = {"int8": 128, "int4": 64, "int2": 64}


def check_scheme(quantization, group_size=None) -> tuple[str | None, int | None]:
    """(scheme, group size) after validation; group size None -> the scheme's default."""
    if quantization not in SCHEMES:
        raise ParameterError("quantization", quantization, "choose one of " + ", ".join(map(repr, SCHEMES)))
    if quantization is None:
        return None, None
    group = DEFAULT_GROUP[quantization] if group_size is None else group_size
    if isinstance(group, bool) or not isinstance(group, int) or group < 8 or group % (8 // BITS[quantization]):
        raise ParameterError("group_size", group_size, "an integer >= 8 (None for the scheme's default)")
    return quantization, group


def bits_per_weight(quantization, group_size=None, dtype_bytes: int = 2) -> float:
    """Storage cost per weight, metadata included (a float16 scale and zero per group)."""
    scheme, group = check_scheme(quantization, group_size)
    if scheme is None:
        return 8.0 * dtype_bytes
    return BITS[scheme] + 32.0 / group


def quantize(weight: torch.Tensor, quantization: str, group_size=None, refine_steps: int = 20) -> dict:
    """{"q": packed uint8 (out, in*bits/8), "scale": fp16 (out, in/group), "zero": fp16 (out, in/group)}."""
    scheme, group = check_scheme(quantization, group_size)
    bits = BITS[scheme]
    out_features, in_features = weight.shape
    group = min(group, in_features)  # tiny test models have rows shorter than a group
    if in_features % group:
        raise ParameterError("group_size", group, f"must divide the input size {in_features}")
    w = weight.detach().float().reshape(out_features, in_features // group, group)
    levels = 2**bits - 1
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = ((high - low) / levels).clamp(min=1e-8)
    zero = -low / scale
    # float16 storage rounds the scale: refine the zero against the scale that will really be used
    scale = scale.half().float()
    zero = _refine_zero(w, scale, zero, levels, refine_steps)
    zero = zero.half().float()
    q = torch.round(w / scale + zero).clamp(0, levels).to(torch.uint8)
    return {"q": pack(q.reshape(out_features, in_features), bits), "scale": scale.squeeze(-1).half(),
            "zero": zero.squeeze(-1).half()}


def _refine_zero(w, scale, zero, levels, steps, p=0.7, beta=10.0, kappa=1.01):
    """HQQ's proximal solver for the zero point (scale fixed): keep the best zero seen."""
    best_zero, best_error = zero, float("inf")
    for _ in range(steps):
        q = torch.round(w / scale + zero).clamp(0, levels)
        residual = w - (q - zero) * scale
        error = residual.abs().mean().item()
        if error >= best_error:
            break
        best_zero, best_error = zero, error
        shrunk = torch.sign(residual) * torch.relu(residual.abs() - residual.abs().clamp(min=1e-8).pow(p - 1) / beta)
        zero = (q - (w - shrunk) / scale).mean(-1, keepdim=True)
        beta *= kappa
    return best_zero


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack 8/bits values per byte along the last dimension (value i of a byte sits at bit offset bits*i)."""
    per_byte = 8 // bits
    if per_byte == 1:
        return q.contiguous()
    q = q.reshape(*q.shape[:-1], q.shape[-1] // per_byte, per_byte)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=q.device)
    return (q << shifts).sum(-1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    per_byte = 8 // bits
    if per_byte == 1:
        return packed
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    values = (packed.unsqueeze(-1) >> shifts) & (2**bits - 1)
    return values.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


def dequantize(parts: dict, quantization: str, dtype=torch.float32) -> torch.Tensor:
    """The (out, in) weight back in `dtype`, on the device of `parts`."""
    bits = BITS[quantization]
    q = unpack(parts["q"], bits)
    out_features, groups = parts["scale"].shape
    w = q.reshape(out_features, groups, -1).to(dtype)
    w = (w - parts["zero"].to(dtype).unsqueeze(-1)) * parts["scale"].to(dtype).unsqueeze(-1)
    return w.reshape(out_features, -1)


def weight_error(weight: torch.Tensor, quantization: str, group_size=None) -> dict:
    """Relative RMS and max-abs errors of one round trip: the quality figure quoted in the notebook."""
    restored = dequantize(quantize(weight, quantization, group_size), quantization, torch.float32)
    diff = restored - weight.float()
    return {"relative_rms": (diff.pow(2).mean().sqrt() / weight.float().pow(2).mean().sqrt()).item(),
            "max_abs": diff.abs().max().item()}
