"""What a person sees in a real browser: the run report, and the widgets of 02 and 04 running in JupyterLab.

The notebooks run under tiny, offline. 04 trains a short LoRA once (for the report); JupyterLab's copy of 04 writes
to the same output folder, so its training resumes from that finished run instead of training again. Screenshots
go to outputs/browser/ (CI keeps them).
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from nbhelpers import report, runner

pytestmark = pytest.mark.slow

LORA_STEPS = 40  # enough for a LoRA that changes the picture; the full 600 steps are tests/test_notebooks.py's
WIDTHS = (1280, 420)  # a laptop and a phone


@pytest.fixture(scope="module")
def tiny_run(browser_out):
    """00, 02 and 04 under tiny through the runner (04 with a short training), and their report."""
    out = browser_out / "run"
    known = runner.available()
    plan = [("00_setup", {}), ("02_txt2img", {}), ("04_lora", {"steps": LORA_STEPS})]
    results = [runner.execute(known[name], out, {**extra, "profile": "tiny", "output_dir": str(out)}, timeout=600)
               for name, extra in plan]
    report.write(results, out, "tiny")
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
    return out


def test_the_report_reads_at_laptop_and_phone_width(browser, tiny_run, browser_out):
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tiny_run / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && e.naturalWidth > 0,"
                   " shown: e.getBoundingClientRect().width, natural: e.naturalWidth}))")
        assert len(images) >= 7, images  # 02: 4 pictures + 3 grids; 04: 3 figures
        assert all(image["ok"] for image in images), [i["src"] for i in images if not i["ok"]]
        for image in images:  # natural size (lab pictures at 2x) unless the page is narrower
            assert image["shown"] <= width and (image["shown"] >= min(image["natural"], width - 40))
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
        captions = page.eval_on_selector_all("figcaption", "els => els.map(e => e.textContent)")
        assert "Held-out prompts before and after the LoRA, same seeds" in captions
        assert errors == []
        page.screenshot(path=str(browser_out / f"report-{width}px.png"), full_page=True)
        page.close()


def test_the_report_links_executed_notebooks_as_pages(browser, tiny_run):
    page = browser.new_page()
    page.goto((tiny_run / "report.html").as_uri())
    section = page.locator("section", has=page.locator("h2#\\30 2_txt2img"))
    assert "lab accuracy" in section.locator("dl").first.inner_text()  # results first
    section.get_by_text("open as a page").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("executed/02_txt2img.html")
    assert page.locator("h1", has_text="Text to image").count() == 1  # a rendered page, not JSON
    page.close()


@pytest.fixture(scope="module")
def lab(tiny_run, browser_out):
    """JupyterLab on 127.0.0.1 with a token, serving copies of 02 and 04 that run under tiny into the report's
    output folder."""
    pytest.importorskip("jupyterlab", reason="JupyterLab missing: pip install -e '.[browser]'")
    root = browser_out / "lab"
    root.mkdir()
    _write_copies(root, tiny_run)
    port, token = _free_port(), secrets.token_hex(16)
    settings = browser_out / "lab-settings"
    # Render every cell: JupyterLab 4 otherwise draws only the cells in view, and the test looks for outputs below
    tracker = settings / "user" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    environment = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTERLAB_SETTINGS_DIR=str(settings / "user"),
                       JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"), JUPYTER_RUNTIME_DIR=str(settings / "rt"))
    with open(browser_out / "jupyterlab.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--ServerApp.terminals_enabled=False"] + (["--allow-root"] if os.geteuid() == 0 else []),  # CI: root
            stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/api/status?token={token}", server)
        yield base, token, browser_out
    finally:
        _stop(server)


def test_the_studio_draws_a_new_prompt_in_jupyterlab(browser, lab, browser_out):
    page = _open_and_run_all(browser, lab, "02_txt2img")
    studio = page.locator(".jp-OutputArea-output .widget-vbox", has=page.locator("button", has_text="Generate"))
    prompt = studio.locator(".widget-textarea", has_text="Prompt").locator("textarea").first
    assert prompt.input_value() == "a red circle on a white background"  # the lab prompt, not a photo prompt
    gallery = studio.locator(".widget-image")
    assert gallery.count() == 0
    prompt.fill("a blue square on a white background")
    studio.locator("button", has_text="Generate").click()
    page.wait_for_function("el => el.querySelectorAll('.widget-image').length >= 4", arg=studio.element_handle(),
                           timeout=60_000)
    assert "image(s)" in studio.locator(".widget-html").last.inner_text()
    colours = gallery.evaluate_all(f"els => els.map({_CENTRE_COLOUR})")
    assert all(blue > 1.5 * max(red, green) for red, green, blue in colours), colours  # blue, as now asked
    studio.scroll_into_view_if_needed()
    page.screenshot(path=str(browser_out / "jupyterlab-02-studio.png"))
    page.close()


def test_the_lora_slider_redraws_in_jupyterlab(browser, lab, browser_out):
    page = _open_and_run_all(browser, lab, "04_lora")
    panel = page.locator(".jp-OutputArea-output .widget-vbox", has=page.locator(".widget-slider"))
    picture = panel.locator("img.widget-image").first
    picture.wait_for(timeout=60_000)
    before = picture.get_attribute("src")
    assert "1.00" in panel.locator(".widget-readout").first.inner_text()
    panel.locator(".widget-slider .noUi-handle, .widget-slider .ui-slider-handle").first.focus()
    page.keyboard.press("Home")  # scale 0: the base model, without the LoRA
    page.wait_for_function("([img, old]) => img.getAttribute('src') !== old", arg=[picture.element_handle(), before],
                           timeout=60_000)
    assert panel.locator(".widget-readout").first.inner_text().strip() in ("0.00", "0.0", "0")
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(browser_out / "jupyterlab-04-lora-slider.png"))
    page.close()


@pytest.fixture(scope="module")
def classic_ipywidgets7(tiny_run, browser_out):
    """The classic notebook with ipywidgets 7.7.1 and widgetsnbextension 3.6.10 (Colab's widget line), from a side
    environment named by $IPYWIDGETS7_PYTHON (its kernel runs the notebooks), serving the same copies of 02 and 04.
    Opt-in: how to build that environment is in README, "Widgets".
    """
    python = os.environ.get("IPYWIDGETS7_PYTHON")
    if not python:
        pytest.skip("IPYWIDGETS7_PYTHON unset: no environment with ipywidgets 7.7.1 and notebook<7 (opt-in, see "
                    "this fixture's docstring)")
    root = browser_out / "classic"
    root.mkdir()
    _write_copies(root, tiny_run)
    port, token = _free_port(), secrets.token_hex(16)
    environment = dict(os.environ, HF_HUB_OFFLINE="1", JUPYTER_RUNTIME_DIR=str(browser_out / "classic-runtime"))
    with open(browser_out / "classic.log", "w") as log:
        server = subprocess.Popen(
            [python, "-m", "notebook", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--NotebookApp.token={token}", f"--notebook-dir={root}"] + (["--allow-root"] if os.geteuid() == 0 else []),
            stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/status?token={token}", server)
        yield f"http://127.0.0.1:{port}", token, python
    finally:
        _stop(server)


def test_ipywidgets_7_in_the_classic_notebook(browser, classic_ipywidgets7, browser_out):
    base, token, python = classic_ipywidgets7
    versions = subprocess.run([python, "-c", "import ipywidgets, widgetsnbextension; print(ipywidgets.__version__)"],
                              capture_output=True, text=True).stdout.strip()
    assert versions.startswith("7."), versions
    for name in ("04_lora", "02_txt2img"):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors, messages = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("console", lambda message: messages.append(message.text))
        page.goto(f"{base}/notebooks/{name}.ipynb?token={token}")
        page.wait_for_function("() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
                               " && Jupyter.notebook.kernel.is_connected() && Jupyter.notebook.kernel.widget_manager",
                               timeout=120_000)
        _wait_for_classic_widget_manager(page, messages)
        page.evaluate("() => Jupyter.notebook.execute_all_cells()")
        page.get_by_text("summary written to").wait_for(timeout=600_000)  # a shared 2-core machine: 02 took > 300 s
        if name == "04_lora":
            panel = page.locator(".output_area .widget-vbox", has=page.locator(".widget-slider")).last
            picture = panel.locator("img.widget-image").first
            try:
                picture.wait_for(state="attached", timeout=60_000)
            except Exception:
                page.screenshot(path=str(browser_out / "failed-classic-04.png"), full_page=True)
                raise AssertionError(f"the LoRA slider did not render; console errors: {errors}") from None
            before = picture.get_attribute("src")
            panel.locator(".ui-slider-handle").first.focus()  # ipywidgets 7: a jQuery UI slider
            page.keyboard.press("Home")
            page.wait_for_function("([img, old]) => img.getAttribute('src') !== old",
                                   arg=[picture.element_handle(), before], timeout=60_000)
            # the kernel the page ran is the ipywidgets 7 one: its models speak controls 1.5.0 / base 1.2.0 (8: 2.0.0)
            versions = page.evaluate("() => Promise.all(Object.values(Jupyter.notebook.kernel.widget_manager._models))"
                                     ".then(models => [...new Set(models.map(m => m.get('_model_module_version')))])")
            assert set(versions) <= {"1.5.0", "1.2.0"}, versions
            target = panel
        else:
            target = page.locator(".output_area .widget-vbox", has=page.locator("button", has_text="Generate")).last
            target.locator(".widget-textarea", has_text="Prompt").locator("textarea").first.fill(
                "a blue square on a white background")
            target.locator("button", has_text="Generate").click()
            page.wait_for_function("el => el.querySelectorAll('img.widget-image').length >= 4",
                                   arg=target.element_handle(), timeout=60_000)
            colours = target.locator("img.widget-image").evaluate_all(f"els => els.map({_CENTRE_COLOUR})")
            assert all(blue > 1.5 * max(red, green) for red, green, blue in colours), colours
        target.scroll_into_view_if_needed()
        page.screenshot(path=str(browser_out / f"classic-ipywidgets7-{name}.png"))
        page.close()


# --- helpers -------------------------------------------------------------------------------------------------------

# The mean colour of the middle of an <img> (the lab shape sits in the centre), drawn on a canvas.
_CENTRE_COLOUR = """img => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const w = Math.floor(c.width / 4), h = Math.floor(c.height / 4);
  const d = g.getImageData(Math.floor(c.width / 2) - w / 2, Math.floor(c.height / 2) - h / 2, w, h).data;
  const sum = [0, 0, 0]; for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
  return sum.map(v => v / (d.length / 4));
}"""


def _open_and_run_all(browser, lab, name: str):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{base}/lab/tree/{name}.ipynb?reset&token={token}")  # reset: no tabs restored from earlier tests
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    # the kernel is up and connected (the status bar reads "Python 3 (ipykernel) | Idle")
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(timeout=120_000)
    for attempt in range(3):  # on a busy machine Lab may not have made the notebook current yet: the menu does nothing
        page.locator(".jp-Notebook .jp-InputPrompt").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        dialog = page.locator(".jp-Dialog .jp-mod-accept")  # "Select Kernel", should Lab still ask: take python3
        if dialog.count():
            dialog.first.click()
        try:  # some cell is running or has run
            page.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                                   ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))", timeout=30_000)
            break
        except Exception:
            if attempt == 2:
                raise
    try:  # the last cell writes summary.json: the whole notebook ran
        page.get_by_text("summary written to").wait_for(timeout=300_000)
    except Exception:
        page.screenshot(path=str(lab[2] / f"failed-{name}.png"), full_page=True)
        raise
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                          has_text="Traceback")
    assert errors.count() == 0, errors.first.inner_text()
    return page


def _wait_for_classic_widget_manager(page, console_messages: list) -> None:
    """Wait, as a person does, until widgetsnbextension 3.6's widget manager has loaded the kernel's widgets.

    On start it asks the kernel for its widgets (a "jupyter.widget.control" comm, which ipywidgets 7.7.1 kernels
    refuse, then a comm_info request); when that answer comes it re-renders every cell that has a widget output,
    and a widget view already live in such a cell is removed and left hidden (its output's model_id blanked).
    Run All sent before that request queues it behind every cell: 04's slider was shown, then hidden at the end."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any('"jupyter.widget.control"' in m for m in console_messages):
        page.wait_for_timeout(100)  # the warning that the control comm failed and the fallback request was sent
    # a comm_info of our own: the kernel answers in order, so the manager's request has been answered before ours
    page.evaluate("() => new Promise(done => Jupyter.notebook.kernel.comm_info('jupyter.widget', () => done()))")


def _write_copies(root, output_dir) -> None:
    """02 and 04 with the parameters cell papermill would inject: tiny, writing into the report's folder."""
    for name, extra in (("02_txt2img", {}), ("04_lora", {"steps": LORA_STEPS})):
        notebook = load_notebook_node(str(runner.available()[name]))  # papermill's reader: the tags it expects
        parameters = {**extra, "profile": "tiny", "output_dir": str(output_dir)}
        nbformat.write(parameterize_notebook(notebook, parameters), root / f"{name}.ipynb")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _wait_for(url: str, server, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {server.returncode}; see jupyterlab.log")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                json.load(answer)
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url.split('?')[0]} within {seconds:g} s")
