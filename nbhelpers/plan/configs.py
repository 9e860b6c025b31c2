"""The shipped configs, and each component built on PyTorch's meta device to count what it holds.

On the meta device a module has every parameter's shape and dtype but no storage: FLUX's 12 billion parameters
cost no memory and a few seconds. Counting is exact because it is the real diffusers/transformers module tree.

Diffusion models live in `data/configs/<model>/` in the Hub's own layout (`model_index.json` plus one
`<component>/config.json` each); the MoE language models are single files written for `nbhelpers.moe.accounting`.
`tiny-sd` and `tiny-sdxl` are the offline tiny pipelines (configs read from the folders `nbhelpers tiny` builds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbhelpers import checks
from nbhelpers.paths import data_dir

DIFFUSION = ("sd15", "sdxl", "sd3-medium", "flux1-schnell")  # text-to-image: what 06 benchmarks
INPAINTING = ("sd15-inpainting", "sdxl-inpainting")  # 03's dedicated models: planned, not benchmarked
TINY = ("tiny-sd", "tiny-sdxl")
MOE_ALIASES = {"t4-moe": "granite-3.1-3b-a800m-instruct"}  # the t4 profile's chat model, by a short name


def moe_names() -> tuple[str, ...]:
    """MoE language models with a config shipped in data/configs (written by the MoE accounting module)."""
    return tuple(sorted(p.stem for p in (data_dir() / "configs").glob("*.json")))


def model_names() -> tuple[str, ...]:
    return DIFFUSION + INPAINTING + moe_names() + tuple(MOE_ALIASES) + TINY


# Hub checkpoints with the same architecture as a shipped config (fine-tunes keep every shape), by the id users type
SAME_ARCHITECTURE = {"mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b"}


def hub_ids() -> dict:
    """Hub id (lower case: the Hub ignores case) -> the shipped model's short name: each config's own source and
    the same-architecture checkpoints above."""
    ids = {key.lower(): name for key, name in SAME_ARCHITECTURE.items()}
    for name in DIFFUSION + INPAINTING + moe_names():
        ids[source(name).lower()] = name
    return ids


def check_model(name) -> str:
    """The short name of a model the planner knows, given its short name or its Hub id."""
    name = MOE_ALIASES.get(name, name)
    if isinstance(name, str) and "/" in name:
        name = hub_ids().get(name.lower(), name)
    allowed = model_names()
    if name not in allowed:
        raise checks.ParameterError("model", name, "choose one of " + ", ".join(allowed)
                                    + " or the Hub id of one (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)")
    return name


def kind(name: str) -> str:
    """"diffusion" or "moe"."""
    return "moe" if check_model(name) in moe_names() else "diffusion"


def _read(path: Path) -> dict:
    """A shipped config; a truncated or hand-edited one is named with what is wrong, not a bare JSONDecodeError."""
    return checks.existing_json("model config", path, "a model config (JSON)")


def model_folder(name: str) -> Path:
    if name in TINY:
        from nbhelpers import tiny

        return tiny.ensure(name.removeprefix("tiny-"))
    return data_dir() / "configs" / name


def component_classes(name: str) -> dict:
    """component -> (library, class name), from model_index.json; only the components with weights."""
    index = _read(model_folder(name) / "model_index.json")
    return {key: tuple(value) for key, value in index.items()
            if isinstance(value, list) and value[0] in ("diffusers", "transformers")
            and (model_folder(name) / key / "config.json").is_file()}


def source(name: str) -> str:
    """The Hub id a shipped config was taken from ("tiny:sd" for the offline tiny pipeline)."""
    if name in TINY:
        return "tiny:" + name.removeprefix("tiny-")
    if kind(name) == "moe":
        return _read(data_dir() / "configs" / f"{name}.json").get("_name_or_path", name)
    return _read(model_folder(name) / "model_index.json").get("source", name)


def component_config(name: str, component: str) -> dict:
    return _read(model_folder(name) / component / "config.json")


def build(library: str, class_name: str, config: dict, device: str = "meta"):
    """An instance of `class_name` from `config` on `device` ("meta": shapes only; "cpu": random weights)."""
    import torch

    with torch.device(device):
        if library == "diffusers":
            import diffusers

            cls = getattr(diffusers, class_name)
            return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        import transformers

        values = dict(config)
        model_type = values.pop("model_type")
        values.pop("architectures", None)
        cfg = transformers.AutoConfig.for_model(model_type, **values)
        return getattr(transformers, class_name)(cfg)


@dataclass(frozen=True)
class ComponentCount:
    name: str
    class_name: str
    total: int  # every parameter, a tied copy counted once
    linear: int  # weights of nn.Linear layers: what bitsandbytes int8/nf4 can quantize
    experts: int = 0  # fused MoE expert weights (MoE models only)
    active: int = 0  # parameters used per token (MoE); equals total for dense components

    def as_dict(self) -> dict:
        return {"component": self.name, "class": self.class_name, "parameters": self.total,
                "linear": self.linear, "experts": self.experts, "active": self.active or self.total}


def count_module(module) -> tuple[int, int]:
    """(total parameters, nn.Linear weights) of a module, shared parameters once."""
    import torch

    total = sum(p.numel() for p in module.parameters())
    linear = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    return total, linear


_CACHE: dict = {}


def components(name: str) -> list[ComponentCount]:
    """Parameter counts of every component of model `name`, from meta-device builds (cached)."""
    name = check_model(name)
    if name not in _CACHE:
        _CACHE[name] = _moe_components(name) if kind(name) == "moe" else _diffusion_components(name)
    return list(_CACHE[name])


def _diffusion_components(name: str) -> list[ComponentCount]:
    counts = []
    for component, (library, class_name) in component_classes(name).items():
        module = build(library, class_name, component_config(name, component))
        total, linear = count_module(module)
        counts.append(ComponentCount(component, class_name, total, linear))
    return counts


def _moe_components(name: str) -> list[ComponentCount]:
    from nbhelpers.moe import accounting

    config = accounting.load_config(name)
    counted = accounting.count_parameters(config)  # the MoE module's own meta-device count, used as is
    model = accounting.meta_model(config)
    total, linear = count_module(model)
    if total != counted["total"]:
        raise RuntimeError(f"{name}: {total} parameters here but {counted['total']} in moe.accounting")
    class_name = (getattr(config, "architectures", None) or [type(model).__name__])[0]
    return [ComponentCount("model", class_name, counted["total"], linear, counted["experts"], counted["active"])]


def analytic_count(name: str, count: ComponentCount) -> int | None:
    """The same component counted by arithmetic on its config (`nbhelpers.plan.analytic`), where that is covered."""
    from nbhelpers.plan import analytic

    if kind(name) == "moe":
        return analytic.count(count.class_name, _read(data_dir() / "configs" / f"{name}.json"))
    return analytic.count(count.class_name, component_config(name, count.name))
