"""A per-layer cache of experts on the compute device with LRU eviction; the others wait in (pinned) host memory.

Each expert is a small dict of tensors (its weights, quantized or not). The cache owns `capacity` device buffers
shaped like one expert and copies experts into them on demand. Two ways to keep the host side:

- exclusive (default): an expert lives either on the device or on the host, never both. A load swaps: the wanted
  expert goes to a spare device buffer and the evicted one goes back into the host buffer just freed. Twice the
  traffic, but Mixtral's 2-bit experts (14.1 GB) then fit in a T4's VRAM plus Colab's 12.7 GB of RAM.
- duplicated: the host keeps every expert; an eviction is free and a load is one copy.

On CUDA the copies run on a side stream, from pinned memory, so they overlap compute; events say when a buffer
is ready and when compute last read it (a buffer is never overwritten before that). On CPU the same code makes
plain copies, so the LRU order, the accounting and the prefetch logic are testable anywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass
class CacheStats:
    """Counters shared by every layer's cache; the engine turns them into rates."""

    lookups: int = 0  # experts a layer needed (once per forward, however many tokens chose it)
    hits: int = 0
    misses: int = 0
    prefetched: int = 0  # loads issued by the prefetcher
    prefetch_used: int = 0  # prefetched experts that a layer then needed
    bytes_h2d: int = 0
    bytes_d2h: int = 0
    bytes_setup: int = 0  # the first placement, not charged to any token
    evictions: list = field(default_factory=list)  # (layer, expert) in eviction order, capped

    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


class ExpertCache:
    def __init__(self, experts: list[dict], capacity: int, device, *, stats: CacheStats, layer: int = 0,
                 exclusive: bool = True):
        self.device = torch.device(device)
        self.capacity = min(capacity, len(experts))
        self.stats, self.layer, self.exclusive = stats, layer, exclusive
        self.num_experts = len(experts)
        self.expert_bytes = sum(t.numel() * t.element_size() for t in experts[0].values())
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        spare = 1 if exclusive and self.capacity < self.num_experts else 0
        self.buffers = [{name: torch.empty_like(t, device=self.device) for name, t in experts[0].items()}
                        for _ in range(self.capacity + spare)]
        self.ready = [None] * len(self.buffers)  # event: copy into the buffer finished
        self.used = [None] * len(self.buffers)  # event: compute finished reading the buffer
        self.resident: OrderedDict[int, int] = OrderedDict()  # expert -> buffer, least recently used first
        self.spare = self.capacity if spare else None
        self.prefetched: set[int] = set()
        for expert in range(self.capacity):  # warm start with the first experts: setup, not per-token traffic
            self._copy(self.buffers[expert], experts[expert], "setup")
            self.resident[expert] = expert
        keep = range(self.capacity, self.num_experts) if exclusive else range(self.num_experts)
        self.host = {e: {n: _host_copy(t, pin=cuda) for n, t in experts[e].items()} for e in keep}

    # -- queries --------------------------------------------------------------------------------------------
    def has(self, expert: int) -> bool:
        return expert in self.resident

    def order(self) -> list[int]:
        """Resident experts, least recently used first."""
        return list(self.resident)

    # -- demand path ----------------------------------------------------------------------------------------
    def lookup(self, experts: list[int]) -> tuple[list[int], list[int]]:
        """Count one lookup per needed expert; (hits, misses). Hits become the most recently used."""
        hits = [e for e in experts if e in self.resident]
        misses = [e for e in experts if e not in self.resident]
        self.stats.lookups += len(experts)
        self.stats.hits += len(hits)
        self.stats.misses += len(misses)
        for e in hits:
            self.resident.move_to_end(e)
            if e in self.prefetched:
                self.prefetched.discard(e)
                self.stats.prefetch_used += 1
        return hits, misses

    def load(self, expert: int, protect=(), prefetch: bool = False) -> bool:
        """Bring `expert` to the device (asynchronously on CUDA), evicting the LRU expert not in `protect`."""
        if expert in self.resident:
            return False
        victims = [e for e in self.resident if e not in protect]
        if len(self.resident) >= self.capacity and not victims:
            return False  # everything resident is still needed: the caller loads it later
        source = self.host[expert]
        if len(self.resident) < self.capacity:
            target = next(i for i in range(len(self.buffers)) if i not in self.resident.values() and i != self.spare)
            self._copy_in(target, source)
        else:
            victim = victims[0]
            freed = self.resident.pop(victim)
            self._note_eviction(victim)
            if self.exclusive:
                target = self.spare
                self._copy_in(target, source)
                self._copy_out(freed, self.host.pop(expert))  # the evicted expert takes the freed host buffer
                self.host[victim] = source
                self.spare = freed
            else:
                target = freed
                self._copy_in(target, source)
        self.resident[expert] = target
        if prefetch:
            self.prefetched.add(expert)
            self.stats.prefetched += 1
        return True

    def weights(self, expert: int) -> dict:
        """The device tensors of a resident expert; on CUDA the compute stream first waits for its copy."""
        index = self.resident[expert]
        if self.ready[index] is not None:
            torch.cuda.current_stream(self.device).wait_event(self.ready[index])
        return self.buffers[index]

    def release(self, expert: int) -> None:
        """Compute has been queued on the expert: its buffer may be overwritten only after that work ends."""
        if self.stream is not None:
            index = self.resident[expert]
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self.used[index] = event

    # -- copies ---------------------------------------------------------------------------------------------
    def _copy_in(self, index: int, source: dict) -> None:
        self._copy(self.buffers[index], source, "h2d", index)

    def _copy_out(self, index: int, target: dict) -> None:
        # the host buffer `target` receives the device buffer `index`; same stream, so after the load that read it
        self._copy(target, self.buffers[index], "d2h", index)

    def _copy(self, target: dict, source: dict, kind: str, index: int | None = None) -> None:
        moved = sum(t.numel() * t.element_size() for t in source.values())
        if kind == "setup":
            self.stats.bytes_setup += moved
        else:
            setattr(self.stats, f"bytes_{kind}", getattr(self.stats, f"bytes_{kind}") + moved)
        if self.stream is None:
            for name, tensor in source.items():
                target[name].copy_(tensor)
            return
        with torch.cuda.stream(self.stream):
            if kind == "h2d" and self.used[index] is not None:
                self.stream.wait_event(self.used[index])  # never overwrite a buffer that compute still reads
            for name, tensor in source.items():
                target[name].copy_(tensor, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        if kind in ("h2d", "setup") and index is not None:
            self.ready[index] = event
        elif kind == "setup":
            event.synchronize()

    def _note_eviction(self, expert: int) -> None:
        self.prefetched.discard(expert)
        if len(self.stats.evictions) < 10_000:
            self.stats.evictions.append((self.layer, expert))

    def device_bytes(self) -> int:
        return len(self.buffers) * self.expert_bytes

    def host_bytes(self) -> int:
        return len(self.host) * self.expert_bytes


def _host_copy(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    """A private host copy; page-locked when a GPU will read it, so copies can be asynchronous."""
    copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
    copy.copy_(tensor)
    return copy
