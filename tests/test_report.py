"""The run report, built from summaries without running notebooks: what comes first, captions, links, wrapping."""

import json

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from PIL import Image

from nbhelpers import report
from nbhelpers.notebook import start
from nbhelpers.runner import NotebookResult


def _result(out, name="02_txt2img", status="ok", error="", **summary):
    executed = out / "executed" / f"{name}.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    notebook = new_notebook(cells=[new_markdown_cell("# Text to image"), new_code_cell("print(1)")])
    nbformat.write(notebook, executed)
    return NotebookResult(name, status, 1.5, executed, error, {"notebook": name, **summary} if summary else None)


def test_results_come_before_settings_and_figures_have_captions(tmp_path):
    run = start("02_txt2img", profile="tiny", output_dir=str(tmp_path))
    Image.new("RGB", (64, 64), "red").save(run.path("images/a.png"))
    Image.new("RGB", (1100, 300), "blue").save(run.path("images/wide.png"))
    run.finish(images={run.path("images/a.png"): "seed 0: a red circle", run.path("images/wide.png"): "A wide plot"},
               settings={"sampler": "DPM++ 2M", "steps": 10}, lab_accuracy={"both": 1.0})
    summary = json.loads((tmp_path / "02_txt2img" / "summary.json").read_text())
    assert summary["images"] == ["images/a.png", "images/wide.png"]  # still a list, as before
    result = _result(tmp_path, **{k: v for k, v in summary.items() if k != "notebook"})
    _, html_path = report.write([result], tmp_path, "tiny")
    page = html_path.read_text()
    assert page.index("lab accuracy") < page.index("<summary>Settings</summary>") < page.index("DPM++ 2M")
    assert "<figcaption>seed 0: a red circle</figcaption>" in page and "<figcaption>A wide plot</figcaption>" in page
    assert "width='128' height='128'" in page  # a 64 px lab picture at 2x
    assert "width='1100' height='300'" in page and "max-width:100%" in page  # natural size, up to the page width
    assert "<a href='02_txt2img/images/wide.png' target='_blank'>" in page  # click: full size
    assert "name='viewport'" in page
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.index("lab accuracy") < markdown.index("Settings:") and "*A wide plot*" in markdown


def test_executed_notebooks_are_linked_as_pages(tmp_path):
    _, html_path = report.write([_result(tmp_path, lab_accuracy=0.5)], tmp_path, "tiny")
    rendered = tmp_path / "executed" / "02_txt2img.html"
    assert rendered.is_file() and "<h1" in rendered.read_text() and "Text to image" in rendered.read_text()
    assert "href='executed/02_txt2img.html'" in html_path.read_text()
    assert "(executed/02_txt2img.html)" in (tmp_path / "report.md").read_text()


def test_files_are_links_and_long_notes_are_not_cut_mid_word(tmp_path):
    lora = tmp_path / "04_lora" / "runs" / "lora-1" / "pytorch_lora_weights.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"x")
    note = "FID skipped: the Inception weights are downloaded from GitHub, which this machine cannot reach " * 2
    result = _result(tmp_path, "04_lora", lora=str(lora), quality={"fid": note})
    page = report.write([result], tmp_path, "tiny")[1].read_text()
    assert "<a href='04_lora/runs/lora-1/pytorch_lora_weights.safetensors'>" in page
    assert note.strip() in page  # in full under Results
    short = report.plain(note, limit=60)
    assert short.endswith(" ...") and note.startswith(short[:-4]) and note[len(short) - 4] == " "


def test_a_failure_shows_in_a_box_that_wraps(tmp_path):
    error = 'cell 7 ("with run.stage(\\"generate\\"):"): ParameterError: ' + "width=100 must be a multiple of 8 " * 8
    page = report.write([_result(tmp_path, status="failed", error=error)], tmp_path, "tiny")[1].read_text()
    assert "0 of 1 notebooks passed" in page and "<pre class='error'>cell 7" in page
    assert "white-space:pre-wrap" in page and "overflow-wrap:anywhere" in page
