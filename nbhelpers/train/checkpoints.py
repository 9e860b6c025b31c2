"""Checkpoints that make a killed-and-resumed run end exactly where one long run would.

Layout of an output folder:

    run.json                      settings + fingerprint; "finished": true once the results are written
    checkpoints/step-00000040/    accelerate's save_state: trainable weights, optimizer, scheduler, RNG states,
                                  the grad scaler, plus trainer_state.json (step reached, loss history)

A checkpoint is written into `.step-XXXXXXXX.tmp` and renamed only when complete, so a disconnect mid-save leaves
the previous checkpoint intact; the newest `keep` are kept. A checkpoint damaged later (a Drive sync cut short, a
full disk) is detected by its file sizes before any model loads, and `--resume latest` falls back to the newest
intact one. trainer_state.json records the settings, so a checkpoint of other settings is refused up front. Only *trainable* weights go into a checkpoint (a LoRA
is a few MB; the frozen 1.7 GB UNet is reloaded from the base model).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nbhelpers import persist
from nbhelpers.checks import ParameterError

RUN_FILE = "run.json"
FOLDER = "checkpoints"
STATE_FILE = "trainer_state.json"
PREFIX = "step-"


@dataclass
class Start:
    kind: str  # "fresh", "resume" or "finished"
    checkpoint: Path | None = None


def read_run(output) -> dict | None:
    try:
        return json.loads((Path(output) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def complete(output) -> list[Path]:
    """Finished checkpoints, oldest first (a temporary folder of a torn save is ignored)."""
    folder = Path(output) / FOLDER
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))


def latest(output) -> Path | None:
    """The newest checkpoint that is intact; a damaged newer one is reported and passed over."""
    found = complete(output)
    for checkpoint in reversed(found):
        problem = damage(checkpoint)
        if problem is None:
            if checkpoint != found[-1]:
                print(f"Resuming from {checkpoint.name}, the newest intact checkpoint (newer ones are damaged).")
            return checkpoint
        print(f"Checkpoint {checkpoint} is damaged ({problem}): trying an older one.")
    return None


def damage(checkpoint) -> str | None:
    """What is wrong with a checkpoint's files, or None. Reads headers and sizes only: a truncated safetensors file
    has fewer bytes than its header promises, a truncated torch/pickle zip has no end-of-archive record."""
    import zipfile

    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{STATE_FILE} unreadable: {error}"
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return "no .safetensors weights"
    for path in weights:
        problem = _safetensors_damage(path)
        if problem:
            return f"{path.name}: {problem}"
    for path in sorted(checkpoint.glob("*.bin")) + sorted(checkpoint.glob("*.pkl")):
        if not zipfile.is_zipfile(path):
            return f"{path.name}: truncated or not a torch archive"
    return None


def _safetensors_damage(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= size - 8:
                return f"header length {length} does not fit a {size}-byte file"
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as error:
        return f"unreadable header ({error})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end != size:
        return f"{size} bytes where the header promises {8 + length + end}"
    return None


def check_compatible(checkpoint: Path, config) -> None:
    """Refuse a checkpoint trained with other weight-changing settings, naming each one, before any model loads:
    loading it would either crash after the model load (another rank) or silently train with settings the model
    card does not state (another learning rate)."""
    from nbhelpers.train.config import NOT_IN_FINGERPRINT

    recorded = checkpoint_settings(checkpoint)
    if recorded is None:
        return  # a checkpoint from before settings were recorded: its run.json was checked, if it had one
    asked = config.settings()
    differing = [name for name, value in sorted(asked.items())
                 if name not in NOT_IN_FINGERPRINT and name in recorded and recorded[name] != value]
    if differing:
        raise ParameterError("resume", str(checkpoint), "a checkpoint of these same settings; it was trained with " +
                             ", ".join(f"{n}={recorded[n]!r}" for n in differing) + " but this run asks for " +
                             ", ".join(f"{n}={asked[n]!r}" for n in differing) +
                             ". Pass the checkpoint's values, or start a fresh run without --resume")


def checkpoint_settings(checkpoint: Path) -> dict | None:
    """The settings a checkpoint was trained with: from its trainer_state.json, else its run's run.json."""
    try:
        state = json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    if isinstance(state.get("settings"), dict):
        return state["settings"]
    record = read_run(Path(checkpoint).parent.parent)
    return record.get("settings") if record else None


def plan_start(config) -> Start:
    """Decide between a fresh start, a resume and an already finished run, refusing to touch another run's folder.
    Reads only: runs before any model is loaded."""
    output = Path(config.output)
    if output.exists() and not output.is_dir():
        raise ParameterError("output", str(output), "a folder (new or holding this run); it is a file")
    contents = [p.name for p in output.iterdir() if not p.name.startswith(".")] if output.is_dir() else []
    record = read_run(output)
    if contents and record is None:
        raise ParameterError("output", str(output), "a new or empty folder; it holds other files (" +
                             ", ".join(sorted(contents)[:4]) + "), which are never overwritten")
    if record is not None and record.get("fingerprint") != config.fingerprint():
        changed = sorted(k for k, v in config.settings().items()
                         if k in record.get("settings", {}) and record["settings"][k] != v and k not in
                         ("output", "resume", "fresh_if_missing", "progress"))
        raise ParameterError("output", str(output), "a new folder, or one holding this same run; it holds another "
                             "run (different " + (", ".join(changed) or "settings") + ")")
    if config.resume is None:
        if contents:
            raise ParameterError("output", str(output), "a new or empty folder; it holds a run already. Pass "
                                 "resume='latest' (--resume latest) to continue it, or choose another folder")
        return Start("fresh")
    if record is not None and record.get("finished"):
        return Start("finished")
    if config.resume == "latest":
        checkpoint = latest(output)
        if checkpoint is None:
            if not config.fresh_if_missing:
                raise ParameterError("resume", "latest", f"a run with an intact checkpoint; {output / FOLDER} holds none. "
                                     "Pass fresh_if_missing=True (--fresh-if-missing) to start from step 0")
            print(f"No intact checkpoint in {output / FOLDER}: starting from step 0.")
            return Start("fresh")
        check_compatible(checkpoint, config)
        return Start("resume", checkpoint)
    checkpoint = Path(config.resume)
    if not (checkpoint / STATE_FILE).is_file():
        raise ParameterError("resume", config.resume, "'latest' or a checkpoint folder (one holding " + STATE_FILE + ")")
    problem = damage(checkpoint)
    if problem:
        raise ParameterError("resume", config.resume, f"an intact checkpoint; this one is damaged ({problem}). "
                             "Pass an older one, or 'latest' to pick the newest intact one")
    check_compatible(checkpoint, config)
    return Start("resume", checkpoint)


def write_run(output, config, finished: bool = False, **extra) -> None:
    persist.atomic_write_json(Path(output) / RUN_FILE, {"fingerprint": config.fingerprint(), "finished": finished,
                                                       "settings": config.settings(), **extra})


def trainable_state(model) -> dict:
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items() if name in names}


def keep_only_trainable_weights(accelerator) -> None:
    """Make save_state/load_state store only the parameters that train (LoRA layers or, in a full fine-tune, the
    whole UNet) instead of every weight of every prepared model."""
    from safetensors.torch import load_file, save_file

    def save_hook(models, weights, folder):
        for i, model in enumerate(models):
            if accelerator.is_main_process:
                save_file(trainable_state(accelerator.unwrap_model(model)), os.path.join(folder, f"trainable_{i}.safetensors"))
        weights.clear()  # accelerate would otherwise also save full state dicts

    def load_hook(models, folder):
        for i, model in enumerate(models):
            model = accelerator.unwrap_model(model)
            state = load_file(os.path.join(folder, f"trainable_{i}.safetensors"))
            missing = set(trainable_state(model)) - set(state)
            if missing:
                raise ValueError(f"checkpoint {folder} lacks {len(missing)} trainable weights, e.g. {sorted(missing)[0]}")
            model.load_state_dict(state, strict=False)
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save(accelerator, output, step: int, trainer_state: dict, keep: int) -> Path:
    """Every process calls this (each saves its own RNG state); the main process publishes it by a rename.
    `trainer_state` should hold "settings" (config.settings()): check_compatible reads them on resume."""
    folder = Path(output) / FOLDER
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **trainer_state}), encoding="utf-8")
        if final.exists():  # re-running from an older checkpoint: the newer state replaces the old one
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, checkpoint) -> dict:
    accelerator.load_state(str(checkpoint))
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())
