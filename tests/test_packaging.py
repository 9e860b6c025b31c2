"""The package installs on Colab without touching what Colab ships."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
COLAB = {"torch": "2.11.0", "diffusers": "0.39.0", "transformers": "5.15.0", "peft": "0.20.0", "ipywidgets": "7.7.1"}


def _requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def test_dependency_ranges_admit_colab_versions():
    requirements = _requirements()
    for name, version in COLAB.items():
        assert requirements[name].specifier.contains(version), f"{name} {version} (Colab) is outside {requirements[name]}"


def test_colab_versions_job_pins_what_colab_ships():
    pinned = dict(line.split("==") for line in (ROOT / ".ci" / "colab-versions.txt").read_text().splitlines()
                  if line and not line.startswith("#"))
    for name in ("diffusers", "transformers", "peft", "ipywidgets"):
        assert pinned[name] == COLAB[name]


def test_torch_is_never_pinned_and_cuda_extras_are_optional():
    requirements = _requirements()
    assert not any(spec.operator in ("==", "<", "<=", "~=") for spec in requirements["torch"].specifier)
    assert "bitsandbytes" not in requirements
