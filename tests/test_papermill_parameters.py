"""Raw papermill reads every parameters cell completely: instructors drive the notebooks with papermill directly.

papermill parses the cell line by line with a regular expression, not with Python: a line with a second `=` (in
its comment) is skipped with "Unable to parse line", and the parameter vanishes from `papermill --help-notebook`.
"""

import ast
import json
import tokenize
from io import StringIO
from pathlib import Path

import pytest
from papermill.inspection import inspect_notebook

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def parameters_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])


def expected(source: str) -> dict:
    """name -> (default as written, the line's comment) read with Python's own parser and tokenizer."""
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(StringIO(source).readline) if token.type == tokenize.COMMENT}
    return {node.targets[0].id: (ast.get_source_segment(source, node.value), comments.get(node.lineno, ""))
            for node in ast.parse(source).body}


def test_the_reader_sees_what_papermill_misses():
    source = 'steps = None  # None = the profile default\nseed = 0\n'
    assert expected(source) == {"steps": ("None", "None = the profile default"), "seed": ("0", "")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_lists_every_parameter_with_its_default_and_help(path, caplog):
    wanted = expected(parameters_cell(path))
    found = inspect_notebook(str(path))
    assert list(found) == list(wanted)  # every parameter, in the cell's order
    for name, (default, comment) in wanted.items():
        assert (found[name]["default"], found[name]["help"]) == (default, comment), name
    assert "Unable to parse" not in caplog.text
