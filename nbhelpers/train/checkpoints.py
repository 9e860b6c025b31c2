"""Checkpoints that make a killed-and-resumed run end exactly where one long run would.

Layout of an output folder:

    run.json                      settings + fingerprint; "finished": true once the results are written
    checkpoints/step-00000040/    accelerate's save_state: trainable weights, optimizer, scheduler, RNG states,
                                  the grad scaler, plus trainer_state.json (step reached, loss history)

A checkpoint is written into `.step-XXXXXXXX.tmp` and renamed only when complete, so a disconnect mid-save leaves
the previous checkpoint intact; the newest `keep` are kept. Only *trainable* weights go into a checkpoint (a LoRA
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
    found = complete(output)
    return found[-1] if found else None


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
                raise ParameterError("resume", "latest", f"a run with a checkpoint; {output / FOLDER} holds none. "
                                     "Pass fresh_if_missing=True (--fresh-if-missing) to start from step 0")
            print(f"No checkpoint in {output / FOLDER}: starting from step 0.")
            return Start("fresh")
        return Start("resume", checkpoint)
    checkpoint = Path(config.resume)
    if not (checkpoint / STATE_FILE).is_file():
        raise ParameterError("resume", config.resume, "'latest' or a checkpoint folder (one holding " + STATE_FILE + ")")
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
    """Every process calls this (each saves its own RNG state); the main process publishes it by a rename."""
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
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **trainer_state}))
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
