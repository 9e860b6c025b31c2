"""Load tests: the same chat request from C clients at once, with latency percentiles and throughput.

Each level sends `requests` requests through a pool of `concurrency` threads (one `openai` client, whose
connection pool serves them all). Latency is one request's wall time; tokens/s is every completion token of the
level over the level's wall time, so it is what the server delivers in total, not what one client sees.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

from nbhelpers import checks


def client(base_url: str, timeout: float = 120):
    """An `openai` client for a local server (the key is required by the client, ignored by the server)."""
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="not-needed-locally", timeout=timeout, max_retries=0)


def percentile(values, q: float) -> float | None:
    """Nearest-rank percentile (q in 0-100): a value that was measured, never an interpolation."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def one_request(api, model: str, prompt: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    reply = api.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                        max_tokens=max_tokens, temperature=0)
    return {"latency_s": time.perf_counter() - start, "tokens": reply.usage.completion_tokens,
            "text": reply.choices[0].message.content}


def level(api, model: str, prompt: str, concurrency: int, requests: int | None = None,
          max_tokens: int = 24) -> dict:
    """Send `requests` (default: max(concurrency, 8)) requests, `concurrency` at a time.

    Each request may wait for every request ahead of it (a server without batching answers one at a time), so the
    client's timeout is stretched to `requests` times its own for the level: latency is what is measured, and a
    request cut off while it queues is not a failure of the server (the large rehearsal lost 13 of 16 so)."""
    concurrency = checks.integer("concurrency", concurrency, minimum=1, maximum=256)
    requests = checks.integer("requests", requests or max(concurrency, 8), minimum=1, maximum=10_000)
    if isinstance(getattr(api, "timeout", None), (int, float)):
        api = api.with_options(timeout=api.timeout * requests)
    results, errors = [], []

    def send(_):
        try:
            results.append(one_request(api, model, prompt, max_tokens))
        except Exception as error:  # counted and reported: a load test must finish to say what failed
            errors.append(f"{type(error).__name__}: {error}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(requests)))
    wall = time.perf_counter() - start
    latencies = [r["latency_s"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "requests": requests, "ok": len(results), "errors": errors[:3],
            "failed": len(errors), "wall_s": round(wall, 3), "requests_per_s": round(len(results) / wall, 3),
            "tokens_per_s": round(tokens / wall, 1), "completion_tokens": tokens,
            "latency_p50_s": _round(percentile(latencies, 50)), "latency_p95_s": _round(percentile(latencies, 95))}


def sweep(api, model: str, prompt: str, levels=(1, 4, 16), max_tokens: int = 24) -> list[dict]:
    return [level(api, model, prompt, c, max_tokens=max_tokens) for c in levels]


def _round(value):
    return None if value is None else round(value, 3)


def plot(results: dict):
    """Throughput and latency against concurrency, one line per server setting ({"label": sweep rows})."""
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, rows in results.items():
        levels = [r["concurrency"] for r in rows]
        left.plot(levels, [r["tokens_per_s"] for r in rows], marker="o", label=label)
        right.plot(levels, [r["latency_p50_s"] for r in rows], marker="o", label=f"{label}, p50")
        right.plot(levels, [r["latency_p95_s"] for r in rows], marker="x", linestyle="--", label=f"{label}, p95")
    for axis, title, unit in ((left, "throughput", "completion tokens / s"), (right, "latency", "seconds")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
