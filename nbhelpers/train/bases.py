"""Which model a run trains on (`base`), and whether it is SD 1.x or SDXL, known before any weights load.

    base = resolve(profile, "train_sdxl")   # Base(name="train_sdxl", spec=ModelSpec(...), family="sdxl")

`base` may be
- a key of the profile's models: "train_base" (the default: the profile's SD 1.5, or the lab SD under tiny),
  "train_sdxl" (SDXL base 1.0 on a GPU, the random miniature SDXL under tiny) or "txt2img";
- an offline model: "tiny:sd", "tiny:sdxl", "lab:sd";
- a Hub id ("owner/name") of an SD 1.x or SDXL text-to-image pipeline, or a local folder holding one.

The family comes from the pipeline class in its model_index.json: a local folder's own, the shipped config of a Hub
model the planner knows (data/configs), or else that one small file from the Hub. An SDXL base on a GPU profile gets
the profile's fp16-safe VAE.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from nbhelpers.checks import ParameterError
from nbhelpers.profiles import LAB_PREFIX, TINY_PREFIX, ModelSpec, Profile

DEFAULT = "train_base"
FAMILIES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl"}
PROFILE_KEYS = ("train_base", "train_sdxl", "txt2img")  # the profile's text-to-image models
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
ALLOWED = ("a profile model key (" + ", ".join(PROFILE_KEYS) + "), an offline model (tiny:sd, tiny:sdxl, lab:sd), "
           "the Hub id (owner/name) of an SD 1.x or SDXL text-to-image model, or a local folder holding one")


@dataclasses.dataclass(frozen=True)
class Base:
    name: str  # as asked ("train_sdxl", "tiny:sdxl", a Hub id)
    spec: ModelSpec  # what the loader loads
    family: str  # "sd": one CLIP text encoder; "sdxl": two, pooled embeddings and size conditioning

    @property
    def defaults_task(self) -> str:
        """Where the profile keeps this family's training defaults."""
        return "train_sdxl" if self.family == "sdxl" else "train"


def resolve(profile: Profile, base: str | None = None) -> Base:
    """The model `base` names on `profile`, checked. Raises ParameterError(base) for anything it cannot train."""
    name = DEFAULT if base is None else base
    if not isinstance(name, str) or not name.strip():
        raise ParameterError("base", base, ALLOWED)
    train_spec = profile.model(DEFAULT)
    if name in profile.models:
        if name not in PROFILE_KEYS:
            raise ParameterError("base", name, ALLOWED + f"; the profile's {name} model is not a text-to-image one")
        spec = profile.model(name)
    elif name.startswith((TINY_PREFIX, LAB_PREFIX)):
        spec = ModelSpec(name)
    elif Path(name).expanduser().is_dir():
        spec = dataclasses.replace(train_spec, source=str(Path(name).expanduser().resolve()), variant=None, vae=None)
    elif HUB_ID.fullmatch(name):
        spec = dataclasses.replace(train_spec, source=name, variant=None, vae=None)  # not every repo has fp16 files
    else:
        raise ParameterError("base", name, ALLOWED)
    family = family_of(name, spec)
    if family == "sdxl" and spec.vae is None and not spec.is_offline:
        spec = dataclasses.replace(spec, vae=profile.model("train_sdxl").vae)
    return Base(name, spec, family)


def family_of(name: str, spec: ModelSpec) -> str:
    pipeline = _pipeline_class(name, spec)
    if pipeline not in FAMILIES:
        raise ParameterError("base", name, ALLOWED + f"; this one is a {pipeline or 'model without model_index.json'}")
    return FAMILIES[pipeline]


def _pipeline_class(name: str, spec: ModelSpec) -> str | None:
    from nbhelpers import loaders

    if spec.is_offline or Path(spec.source).is_dir():
        if spec.source.startswith(TINY_PREFIX):
            from nbhelpers import tiny

            if spec.source.removeprefix(TINY_PREFIX) not in tiny.BUILDERS:
                raise ParameterError("base", name, ALLOWED)
        if spec.source.startswith(LAB_PREFIX):
            from nbhelpers.paths import data_dir

            if not (data_dir() / "lab" / spec.source.removeprefix(LAB_PREFIX) / "model_index.json").is_file():
                raise ParameterError("base", name, ALLOWED + "; no such lab pipeline in data/lab")
        return _read_class(Path(loaders.resolve_source(spec)) / "model_index.json")
    from nbhelpers.plan import configs

    shipped = configs.hub_ids().get(spec.source.lower())
    if shipped in configs.DIFFUSION:  # known architecture: no download needed
        return _read_class(configs.model_folder(shipped) / "model_index.json")
    from huggingface_hub import hf_hub_download

    from nbhelpers.access import HubAccessError, hub_access

    try:
        with hub_access(spec.source):
            return _read_class(Path(hf_hub_download(spec.source, "model_index.json")))
    except (ParameterError, HubAccessError):  # a gated model: the access message says what to do
        raise
    except Exception as error:  # offline, no such repo, gated: say so before anything heavy
        raise ParameterError("base", name, ALLOWED + f"; its model_index.json could not be read "
                             f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})") from None


def _read_class(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
