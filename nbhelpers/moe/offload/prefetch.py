"""Speculative prefetch: guess the next MoE layer's experts one layer early and start copying them.

When decoder layer L starts, its input is the residual stream h_L. Layer L+1 will route
`router_{L+1}(norm_{L+1}(h_{L+1}))`, and h_{L+1} = h_L + (what layer L adds), which is usually small next to
h_L. So `router_{L+1}(norm_{L+1}(h_L))` is a cheap, often right guess (Eliseev & Mazur 2023 report most guesses
right for Mixtral). The copies of the guessed experts then run during layer L's attention and experts. A wrong
guess costs bandwidth and may evict a useful expert; it never changes the output.
"""

from __future__ import annotations

import torch


def predict(layer, hidden_states: torch.Tensor, limit: int) -> list[int]:
    """The experts `layer` (a support.MoeLayer) would pick for `hidden_states`, most chosen first, at most `limit`."""
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])
    if layer.norm is not None:
        flat = layer.norm(flat)
    _, _, top_k_index = layer.router(flat)
    counts = torch.bincount(top_k_index.flatten(), minlength=1)
    ranked = torch.argsort(counts, descending=True, stable=True)
    ranked = ranked[counts[ranked] > 0][:limit]
    return ranked.tolist()


class Prefetcher:
    """Forward pre-hooks on each MoE decoder layer that prefetch the next MoE layer's guessed experts."""

    def __init__(self, layers: list, caches: list):
        self.layers, self.caches = layers, caches
        self.guesses: list[tuple[int, list[int]]] = []  # (moe layer position, experts), last forward only
        self.handles = [layers[i].layer.register_forward_pre_hook(self._hook(i), with_kwargs=True)
                        for i in range(len(layers) - 1)]

    def _hook(self, position: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            target, cache = self.layers[position + 1], self.caches[position + 1]
            with torch.no_grad():
                guess = predict(target, hidden, cache.capacity)
            if position == 0:
                self.guesses.clear()
            self.guesses.append((position + 1, guess))
            for expert in guess:
                cache.load(expert, protect=set(guess), prefetch=True)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
