"""Fetch a profile's models before the lessons need them: Hub downloads with progress bars, or the tiny builds.

Only safetensors weights and the small config/tokenizer files are fetched: never pickled `.bin`/`.ckpt` weights.
"""

from __future__ import annotations

from nbhelpers import env, persist, rehearsal
from nbhelpers.profiles import Profile

WEIGHT_PATTERNS = ["*.json", "*.txt", "*.model", "tokenizer*", "*.jinja"]
NEVER = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data"]


def allow_patterns(variant: str | None) -> list[str]:
    weights = f"*.{variant}.safetensors" if variant else "*.safetensors"
    return WEIGHT_PATTERNS + [weights]


def prepare(profile: Profile, tasks=None) -> dict[str, str]:
    """Local folders of the profile's models, by task: built (tiny) or downloaded into the model cache (Hub)."""
    persist.configure_model_cache()
    from nbhelpers.loaders import resolve_source

    folders, done = {}, {}
    for task in tasks or profile.models:
        spec = profile.model(task)
        key = (spec.source, spec.variant)
        if key not in done:
            if spec.is_offline or rehearsal.enabled():  # the rehearsal builds random weights instead
                done[key] = resolve_source(spec)
            else:
                from huggingface_hub import snapshot_download

                from nbhelpers.access import hub_access

                print(f"downloading {spec.source} ({spec.variant or 'default'} weights)")
                with hub_access(spec.source):
                    done[key] = snapshot_download(spec.source, allow_patterns=allow_patterns(spec.variant),
                                                  ignore_patterns=NEVER, token=env.hf_token())
        folders[task] = str(done[key])
    return folders
