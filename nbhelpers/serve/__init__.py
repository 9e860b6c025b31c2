"""Serving a chat model behind an OpenAI-compatible API, on an existing engine.

- transformers_engine: `transformers serve` with the profile's chat model (tiny, t4), through `launch`, which puts
  `guard` (400s for malformed requests) in front and stops cleanly;
- vllm_engine: a `vllm serve` command sized by the planner (dtype, --max-model-len, AWQ where needed, tensor and
  pipeline parallelism, several machines through Ray);
- process: the server as a child process (start, wait for /v1/models, stop like Ctrl-C); ports: busy or free;
- load: concurrent requests with latency percentiles and tokens/s.

    with serve.start("tiny") as server:      # a free port on 127.0.0.1
        api = serve.load.client(server.url)
"""

from __future__ import annotations

from pathlib import Path

from nbhelpers import checks
from nbhelpers.profiles import Profile, get_profile
from nbhelpers.serve import load  # noqa: F401
from nbhelpers.serve.process import Server, ServerError  # noqa: F401

ENGINES = ("transformers", "vllm")


def engine_for(profile: Profile, engine: str | None) -> str:
    return checks.choice("engine", engine or profile.defaults["serve"]["engine"], ENGINES)


def transformers_server(profile: Profile | str = "tiny", host: str = "127.0.0.1", port: int = 0,
                        continuous_batching: bool | None = None, log_path=None) -> Server:
    """A (not yet started) `transformers serve` server for the profile's chat model; port 0 picks a free one."""
    from nbhelpers.serve import ports, transformers_engine

    profile = get_profile(profile) if isinstance(profile, str) else profile
    port = ports.check_free(host, port)
    argv = transformers_engine.command(profile, host, port, continuous_batching)
    return Server(argv, f"http://{_url_host(host)}:{port}", transformers_engine.environment(profile), log_path)


def start(profile: Profile | str = "tiny", host: str = "127.0.0.1", port: int = 0,
          continuous_batching: bool | None = None, log_path=None, timeout: float | None = None) -> Server:
    """Start the profile's chat model behind `transformers serve` and return once `/v1/models` answers
    (`timeout` None: 5 minutes for a local model, 30 for one the server first downloads)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if timeout is None:
        timeout = 300 if profile.model("chat").is_offline else 1800
    return transformers_server(profile, host, port, continuous_batching, log_path).start(timeout)


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host


def default_log(name: str = "server.log") -> Path:
    from nbhelpers import persist

    return persist.nbhelpers_cache() / "serve" / name
