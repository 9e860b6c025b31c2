"""Resident memory per notebook stage in a rehearsal, to check the planner's arithmetic.

These are CPU RAM figures of float32 (or bfloat16) models: not VRAM, not fp16, no CUDA allocator. What they can
check is the planner's arithmetic: weights bytes (parameters x bytes per parameter) and how activations grow.
"""

from __future__ import annotations

import resource

GIB = 2**30


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """The process's highest RSS so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stage_memory(previous: dict | None = None) -> dict:
    """RSS after a stage and the peak so far (a stage run twice keeps the higher figures)."""
    now = {"rss_gib": round(rss_bytes() / GIB, 3), "peak_rss_gib": round(peak_rss_bytes() / GIB, 3)}
    if previous:
        now = {key: max(value, previous.get(key, 0)) for key, value in now.items()}
    return now
