"""The `transformers` engine: `transformers serve` with the profile's chat model (nbhelpers.serve.launch).

Under `tiny` the model is the lab MoE from its local folder, so nothing touches the network; under `t4` it is the
profile's Hub model in fp16 on the GPU. Continuous batching (transformers' paged-attention scheduler) is on by
default: without it, transformers runs one `generate()` at a time and concurrent requests wait in a queue.
"""

from __future__ import annotations

import os
import sys

from nbhelpers.profiles import Profile


def command(profile: Profile, host: str = "127.0.0.1", port: int = 8000,
            continuous_batching: bool | None = None) -> list[str]:
    from nbhelpers.loaders import device_for, resolve_source

    spec = profile.model("chat")  # the instruct model of the profile: whatever `tiny` ships, read from its folder
    settings = profile.defaults["serve"]
    device = device_for(profile)
    argv = [sys.executable, "-m", "nbhelpers.serve.launch", resolve_source(spec), "--host", host, "--port",
            str(port), "--device", device, "--dtype", spec.dtype if device == "cuda" else "float32"]
    if settings["continuous_batching"] if continuous_batching is None else continuous_batching:
        argv.append("--continuous-batching")
        for name in ("cb_num_blocks", "cb_max_batch_tokens"):
            if settings.get(name):
                argv += ["--" + name.replace("_", "-"), str(settings[name])]
    return argv


def environment(profile: Profile) -> dict:
    """The child's environment: the Hub token where one is set (Colab secret or HF_TOKEN), never on its command
    line; one torch thread under tiny, so the server and the client measuring it do not fight over 2 cores."""
    from nbhelpers import env

    child = dict(os.environ)
    token = env.hf_token()
    if token:
        child["HF_TOKEN"] = token
    if profile.name == "tiny":
        child.setdefault("OMP_NUM_THREADS", "1")
    from nbhelpers.paths import source_checkout

    root = source_checkout()
    if root is not None:  # the child must import this same nbhelpers, not another installed copy
        child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), child.get("PYTHONPATH")]))
    return child
