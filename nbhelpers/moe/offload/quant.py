"""Group-wise low-bit quantization of expert weights with HQQ (Half-Quadratic Quantization, `pip install hqq`).

Why HQQ, among the maintained libraries the job allows:
- size: the 45.1B expert parameters of Mixtral must fit in ~15 GB of T4 VRAM plus what is left of Colab's
  ~12.7 GB of RAM. HQQ has 2- and 3-bit formats; at 2 bits with a float16 scale and zero per group of 64
  (2.5 bits per weight) the experts take 14.1 GB, 55 MB each. bitsandbytes has 4 bits at the least (25.4 GB: does
  not fit) and skips transformers 5's fused 3D expert tensors (bitsandbytes #1849).
- quality: HQQ fits the zero point to a sparse (l_p, p < 1) error with a few half-quadratic steps instead of the
  min/max rule, without calibration data; at 2 bits that lowers the error measurably (tested: `optimize=False` is
  worse). mixtral-offloading, the reference T4 result, used HQQ 2-bit experts for the same reasons.
- T4 speed: dequantization is bit unpacking, a subtraction and a multiplication in plain torch ops (HQQ's
  `Quantizer.dequantize`), so it runs on any device and `torch.compile` fuses it into one kernel on CUDA; the
  quantizer runs on the GPU when there is one (on this project's CPU: ~4 s for a 2048x4096 matrix at 2 bits).

The stored tensors of one (out, in) matrix: `q` (HQQ's packed integers), `scale` and `zero` in float16, shaped
(out, in / group_size). The weight is `(q - zero) * scale` group by group. We call HQQ's quantizer and
dequantizer and keep the layout small and explicit, rather than wrapping each expert in an `HQQLinear` module,
because the cache copies plain tensors between fixed device buffers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbhelpers.checks import ParameterError

if TYPE_CHECKING:  # torch loads with the first (de)quantization: the budgets and the planner need only the arithmetic
    import torch

BITS = {"int8": 8, "int4": 4, "int3": 3, "int2": 2}
SCHEMES = (None,) + tuple(BITS)
DEFAULT_GROUP = {"int8": 128, "int4": 64, "int3": 64, "int2": 64}
# bits a packed value really occupies: HQQ packs ten 3-bit values into one 32-bit word
STORED_BITS = {8: 8.0, 4: 4.0, 3: 3.2, 2: 2.0}


def check_scheme(quantization, group_size=None) -> tuple[str | None, int | None]:
    """(scheme, group size) after validation; group size None -> the scheme's default."""
    if quantization not in SCHEMES:
        raise ParameterError("quantization", quantization, "choose one of " + ", ".join(map(repr, SCHEMES)))
    if quantization is None:
        return None, None
    group = DEFAULT_GROUP[quantization] if group_size is None else group_size
    if isinstance(group, bool) or not isinstance(group, int) or group < 8 or group % 8:
        raise ParameterError("group_size", group_size, "a multiple of 8, at least 8 (None for the scheme's default)")
    return quantization, group


def bits_per_weight(quantization, group_size=None, dtype_bytes: int = 2) -> float:
    """Storage cost per weight, metadata included (a float16 scale and zero per group)."""
    scheme, group = check_scheme(quantization, group_size)
    if scheme is None:
        return 8.0 * dtype_bytes
    return STORED_BITS[BITS[scheme]] + 32.0 / group


def _hqq():
    try:
        from hqq.core.quantize import Quantizer
    except ImportError as error:  # a dependency of nbhelpers: only a broken install gets here
        raise ImportError("expert quantization needs HQQ: pip install hqq") from error
    return Quantizer


def quantize(weight: torch.Tensor, quantization: str, group_size=None, optimize: bool = True) -> dict:
    """{"q": HQQ's packed integers, "scale": fp16 (out, in/group), "zero": fp16 (out, in/group)}.

    Runs on the weight's device; `optimize=False` skips HQQ's zero-point fit (plain min/max), for comparison."""
    scheme, group = check_scheme(quantization, group_size)
    out_features, in_features = weight.shape
    group = min(group, in_features)  # tiny test models have rows shorter than a group
    if in_features % group:
        raise ParameterError("group_size", group, f"must divide the input size {in_features}")
    per_byte = {2: 4, 4: 2}.get(BITS[scheme], 1)
    if (out_features * in_features // group) % per_byte:  # HQQ packs whole groups of rows into a byte
        raise ParameterError("group_size", group, f"a size giving a multiple of {per_byte} groups for a "
                             f"{out_features}x{in_features} matrix at {scheme}")
    q, meta = _hqq().quantize(weight.detach().float(), nbits=BITS[scheme], group_size=group, axis=1,
                              optimize=optimize, bitpack=True, device=weight.device)
    groups = in_features // group
    return {"q": q.contiguous(), "scale": meta["scale"].reshape(out_features, groups).half(),
            "zero": meta["zero"].reshape(out_features, groups).half()}


def dequantize(parts: dict, quantization: str, dtype=None) -> torch.Tensor:
    """The (out, in) weight back in `dtype` (default float32), on the device of `parts` (HQQ's dequantizer)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    Quantizer = _hqq()
    bits = BITS[quantization]
    out_features, groups = parts["scale"].shape
    q_rows = parts["q"].shape[1]  # with axis=1 HQQ packs along rows of length group_size
    meta = {"nbits": bits, "group_size": q_rows, "axis": 1, "shape": (out_features, groups * q_rows),
            "packing": Quantizer.bit_to_packing[bits], "view_as_float": False, "compute_dtype": dtype,
            "unpack_view_dtype": Quantizer.unpack_view_dtype[Quantizer.bit_to_packing[bits]],
            "scale": parts["scale"].to(dtype).reshape(-1, 1), "zero": parts["zero"].to(dtype).reshape(-1, 1)}
    return Quantizer.dequantize(parts["q"], meta)


def weight_error(weight: torch.Tensor, quantization: str, group_size=None, optimize: bool = True) -> dict:
    """Relative RMS and max-abs errors of one round trip: the quality figure quoted in the notebook."""
    restored = dequantize(quantize(weight, quantization, group_size, optimize), quantization)
    diff = restored - weight.float()
    return {"relative_rms": (diff.pow(2).mean().sqrt() / weight.float().pow(2).mean().sqrt()).item(),
            "max_abs": diff.abs().max().item()}
