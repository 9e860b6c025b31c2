"""The experts module that replaces `block.experts` of a transformers 5 MoE layer (fused layout).

It takes the same call as the library's experts, `experts(hidden_states, top_k_index, top_k_weights)`, and does
the same math as the library's eager loop (one expert at a time: `gate, up = x @ gate_up.T`, `act(gate) * up`,
`@ down.T`, times the routing weight, added into the output, experts in ascending order), so without
quantization its output is the library's. The difference is where the weights come from: an `ExpertCache`.

Why replace the module rather than register a function in transformers' `ExpertsInterface`: an interface function
is called with the original module and reads its `gate_up_proj` / `down_proj` parameters, which must then exist
in full on the device. Offloading is the point of not having them there.

Order of work in one forward: experts already on the device are computed first while the missing ones are copied
in (as many as fit without evicting a needed expert); the rest load one by one, each evicting one already used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nbhelpers.moe.offload import quant


class ExpertCodec:
    """How one expert's two matrices are stored: as they are, or quantized (`quant`)."""

    def __init__(self, quantization=None, group_size=None, storage_dtype=None, compile_dequant: bool = False,
                 optimize: bool = True):
        self.quantization, self.group_size = quant.check_scheme(quantization, group_size)
        self.optimize = optimize  # HQQ's zero-point fit; off only in the rehearsal (minutes per matrix on a CPU)
        self.storage_dtype = storage_dtype  # None: keep the checkpoint's dtype (unquantized only)
        self._compiled = None
        if compile_dequant and self.quantization:
            # one fused unpack-and-scale kernel on CUDA instead of five passes over the weight
            self._compiled = torch.compile(quant.dequantize, dynamic=False)

    def encode(self, gate_up: torch.Tensor, down: torch.Tensor) -> dict:
        return {**self.encode_one("gate_up", gate_up), **self.encode_one("down", down)}

    def encode_one(self, name: str, weight: torch.Tensor) -> dict:
        """The stored tensors of one matrix ("gate_up" or "down"), named as `decode` expects them."""
        if self.quantization is None:
            return {name: weight.detach().to(self.storage_dtype or weight.dtype).contiguous()}
        parts = quant.quantize(weight, self.quantization, self.group_size, optimize=self.optimize)
        return {f"{name}.{key}": tensor for key, tensor in parts.items()}

    def decode(self, parts: dict, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.quantization is None:
            return parts["gate_up"].to(dtype), parts["down"].to(dtype)
        return tuple(self._dequantize({key: parts[f"{name}.{key}"] for key in ("q", "scale", "zero")}, dtype)
                     for name in ("gate_up", "down"))

    def _dequantize(self, parts: dict, dtype) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(parts, self.quantization, dtype)
            except Exception as error:  # no working compiler (Triton, a C compiler): the eager ops, same numbers
                print(f"torch.compile of the dequantizer failed ({type(error).__name__}); using eager ops")
                self._compiled = None
        return quant.dequantize(parts, self.quantization, dtype)

    def describe(self) -> dict:
        return {"quantization": self.quantization, "group_size": self.group_size,
                "bits_per_weight": quant.bits_per_weight(self.quantization, self.group_size)
                if self.quantization else None}


class OffloadedExperts(nn.Module):
    """Drop-in for MixtralExperts (and the other fused-layout experts) whose weights live in an ExpertCache."""

    def __init__(self, cache, codec: ExpertCodec, act_fn, num_experts: int, on_tokens=None):
        super().__init__()
        self.cache, self.codec, self.act_fn, self.num_experts = cache, codec, act_fn, num_experts
        self.on_tokens = on_tokens  # callback(num_tokens): the engine counts tokens at its first layer

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, on_device={self.cache.capacity}, device={self.cache.device}, "
                f"quantization={self.codec.quantization}")

    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        if self.on_tokens is not None:
            self.on_tokens(hidden_states.shape[0])
        needed = sorted(set(top_k_index.flatten().tolist()))  # one device sync, as in the library's loop
        hits, misses = self.cache.lookup(needed)
        pending = set(needed)
        for expert in misses:  # start the copies now, so they overlap the hits' compute
            if not self.cache.load(expert, protect=pending):
                break
        outputs = {}
        for expert in hits + misses:
            if not self.cache.has(expert):
                self.cache.load(expert, protect=pending)
            outputs[expert] = self._expert(expert, hidden_states, top_k_index, top_k_weights)
            self.cache.release(expert)
            pending.discard(expert)
        final = torch.zeros_like(hidden_states)
        for expert in needed:  # ascending order: the library's summation order, so the same rounding
            token_idx, contribution = outputs[expert]
            # a token picks an expert at most once, so this is index_add_ (one addition per element), without
            # index_add_'s thread start-up, which costs milliseconds per call on a busy CPU
            final[token_idx] = final[token_idx] + contribution.to(final.dtype)
        return final

    def _expert(self, expert, hidden_states, top_k_index, top_k_weights):
        top_k_pos, token_idx = torch.where((top_k_index == expert).T)
        gate_up, down = self.codec.decode(self.cache.weights(expert), hidden_states.dtype)
        gate, up = F.linear(hidden_states[token_idx], gate_up).chunk(2, dim=-1)
        current = F.linear(self.act_fn(gate) * up, down)
        return token_idx, current * top_k_weights[token_idx, top_k_pos, None]
