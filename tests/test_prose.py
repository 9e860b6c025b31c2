"""What the notebooks and profiles.py say about the tiny profile's models is what data/lab ships."""

import json
import math
import re
from pathlib import Path

import pytest

from nbhelpers.paths import data_dir
from nbhelpers.profiles import LAB_PREFIX, PROFILES

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MILLIONS = re.compile(r"(\d+(?:\.\d+)?)M[- ]parameters?")


def shipped_parameters(source: str) -> int:
    from safetensors import safe_open

    total = 0
    for path in (data_dir() / "lab" / source[len(LAB_PREFIX):]).rglob("*.safetensors"):
        with safe_open(str(path), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def tiny_lab_models() -> dict:
    """note -> source of every lab model of the tiny profile whose note gives a parameter count."""
    return {spec.note: spec.source for spec in PROFILES["tiny"].models.values()
            if spec.source.startswith(LAB_PREFIX) and MILLIONS.search(spec.note)}


def prose(notebook: Path) -> str:
    """Markdown cells and code comments: what a learner reads."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) if c["cell_type"] == "markdown" else
                     "\n".join(line.split("#", 1)[1] for line in "".join(c["source"]).splitlines() if "#" in line)
                     for c in cells)


def test_the_tiny_profile_notes_give_the_shipped_parameter_counts():
    assert tiny_lab_models(), "the tiny profile describes its lab models"
    for note, source in tiny_lab_models().items():
        stated = MILLIONS.search(note).group(1)
        decimals = len(stated.split(".")[1]) if "." in stated else 0
        assert round(shipped_parameters(source) / 1e6, decimals) == float(stated), (source, note)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebooks_describe_the_tiny_models_as_the_profile_does(notebook):
    known = {float(MILLIONS.search(note).group(1)) for note in tiny_lab_models()}
    text = prose(notebook)
    for sentence in re.split(r"(?<=[.:;])\s", text):
        if "tiny" in sentence or "lab " in sentence:
            for count in MILLIONS.findall(sentence):
                assert float(count) in known, f"{notebook.name}: {sentence!r} (the profile says {sorted(known)}M)"
            for layers in re.findall(r"(\d+) layers", sentence):
                if "Mixtral" in sentence or "MoE" in sentence:
                    config = json.loads((data_dir() / "lab" / "mixtral-instruct" / "config.json").read_text())
                    assert int(layers) == config["num_hidden_layers"], f"{notebook.name}: {sentence!r}"
            assert not re.search(r"random (weights|model)|built on this machine", sentence) or "rehears" in sentence, \
                f"{notebook.name} calls the trained lab models random: {sentence!r}"
