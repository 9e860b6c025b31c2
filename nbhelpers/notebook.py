"""The start and end of every notebook: resolve the profile, seed, prepare the output folder, time the stages,
and write `summary.json`.

    run = nbhelpers.start("02_txt2img", profile=profile, seed=seed, output_dir=output_dir)
    settings = run.settings("txt2img", steps=steps, width=width)  # None -> the profile's default, recorded
    settings.steps                                                # or engine.txt2img(**settings)
    with run.stage("generate"):
        ...
    run.finish(images={path: caption}, metrics={...})     # -> <output_dir>/02_txt2img/summary.json
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

from nbhelpers import checks, persist
from nbhelpers.profiles import PROFILE_NAMES, Profile, get_profile


class Settings(dict):
    """A notebook's resolved settings: read them as `settings.steps` or pass them on as `**settings`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}; these are set: {', '.join(self)}") from None

    def only(self, *names) -> "Settings":
        """The settings called `names`, e.g. the sampling ones to pass on as `**settings.only(...)`."""
        return Settings({name: self[name] for name in names})


class NotebookRun:
    def __init__(self, notebook: str, profile: Profile, requested_profile: str, seed: int, out: Path,
                 parameters: dict):
        self.notebook = notebook
        self.profile = profile
        self.requested_profile = requested_profile
        self.seed = seed
        self.out = out
        self.parameters = dict(parameters)
        self.timings: dict[str, float] = {}
        self.results: dict = {}
        from nbhelpers import rehearsal

        self.random_weights = rehearsal.enabled() and profile.name != "tiny"
        self.memory: dict[str, dict] = {}  # rehearsal only: RSS per stage (CPU RAM, not VRAM)

    def settings(self, task: str, **values) -> Settings:
        """The notebook's parameters for `task`, every None filled from the profile (`Profile.resolve`), recorded
        in the summary's parameters."""
        resolved = self.profile.resolve(task, **values)
        self.parameters.update(resolved)
        return Settings(resolved)

    def param(self, task: str, name: str, value=None):
        """One setting: `value`, or the profile's default when it is None (see `settings`)."""
        return self.settings(task, **{name: value})[name]

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 3)
            if self.random_weights:
                from nbhelpers.rehearsal.memory import stage_memory

                self.memory[name] = stage_memory(self.memory.get(name))

    def path(self, relative: str) -> Path:
        """A path inside this notebook's output folder (parent folders created)."""
        target = self.out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def relative(self, path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.out))
        except ValueError:
            return str(path)

    def finish(self, **results) -> Path:
        """Write summary.json. `images=[paths]` are stored relative to the notebook's output folder; given as
        `images={path: caption}`, each caption (what the figure shows) goes under the figure in the run report."""
        if isinstance(results.get("images"), dict):
            results["captions"] = {self.relative(p): str(text) for p, text in results["images"].items()}
            results["images"] = list(results["images"])
        self.results.update(results)
        if "images" in self.results:
            self.results["images"] = [self.relative(p) for p in self.results["images"]]
        summary = {
            "notebook": self.notebook,
            "profile": self.profile.name,
            "requested_profile": self.requested_profile,
            "seed": self.seed,
            "parameters": self.parameters,
            "timings": self.timings,
            **self.results,
        }
        if self.random_weights:
            from nbhelpers.rehearsal import NOISE

            summary.update(random_weights=True, noise=NOISE, memory=self.memory)
        path = persist.write_summary(self.out, summary)
        print(f"summary written to {path}")
        return path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)


def start(notebook: str, *, profile: str = "auto", seed: int = 0, output_dir: str = "", **parameters) -> NotebookRun:
    """Check the common parameters, set the model cache, resolve the profile, and open the output folder."""
    checks.choice("profile", profile, PROFILE_NAMES)
    checks.integer("seed", seed, minimum=0, maximum=2**32 - 1)
    persist.configure_model_cache()
    resolved = get_profile(profile)
    out = persist.ensure_writable(persist.workspace(output_dir) / notebook, "output_dir")
    seed_everything(seed)
    if resolved.name == "tiny":
        import torch

        # Tiny tensors: handing work between threads costs more than it saves, and small CI machines share cores.
        torch.set_num_threads(1)
    print(f"{notebook}: profile {resolved.name} ({resolved.description}); outputs in {out}")
    from nbhelpers import rehearsal

    if rehearsal.enabled() and resolved.name != "tiny":
        from nbhelpers.rehearsal import NOISE

        print(f"*** {NOISE}: every picture and text below is noise ***")
    return NotebookRun(notebook, resolved, profile, seed, out, {"profile": profile, "seed": seed,
                                                                 "output_dir": str(output_dir), **parameters})
