"""The run report: per notebook its status, what the lesson showed (results), its figures with captions, the files it
wrote and the executed notebook as a web page; settings and timings come last. Written as Markdown and HTML.

The HTML reads on a phone (420 px) as well as on a wide screen: figures show at their natural size up to the page
width (small pixel-art images at 2x) and open full size on a click; long text wraps instead of being cut.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

from nbhelpers import persist

# The lesson outcomes of each notebook (what tests/test_notebooks.py asserts from its summary.json), shown first.
RESULTS = {
    "00_setup": ["doctor", "models"],
    "01_moe_inference": ["outcomes", "routing", "generations"],
    "01b_mixtral_offload": ["engine", "equivalence", "sweep"],
    "02_txt2img": ["lab_accuracy", "memory_changes"],
    "03_inpainting": ["inpainting"],
    "04_lora": ["stripe_rate", "losses", "resumed_from"],
    "05_dreambooth": ["subject_rate", "class_drift", "identifier_change", "losses"],
    "06_benchmarks": ["quality", "bench", "calibration"],
    "07_troubleshooting": ["out_of_memory", "diagnosed", "refusal", "bad_input"],
    "08_instruct": ["task_scores", "sft_loss", "dpo"],
    "09_serving": ["reply", "streamed", "bad_request"],
}
# The overview's one line, where the first result is not the clearest (dotted: a value inside a dict).
HEADLINES = {"00_setup": "highlights", "06_benchmarks": "quality.lab_accuracy"}
# Never results: the run's settings, shown under "Settings", and bookkeeping.
SETTINGS_KEYS = ("parameters", "settings")
BOOKKEEPING = {"notebook", "profile", "requested_profile", "seed", "timings", "images", "captions", "highlights"}
SHORT = 120  # characters of a value in the overview table


def results(summary: dict | None) -> list[tuple[str, object]]:
    """(key, value) of the lesson outcomes; for a notebook without listed outcomes, everything it reported."""
    if not summary:
        return []
    listed = RESULTS.get(summary.get("notebook", ""))
    keys = [key for key in listed if key in summary] if listed else _reported(summary)
    return [(key, summary[key]) for key in keys]


def details(summary: dict | None) -> list[tuple[str, object]]:
    """Everything else the notebook reported (measurements behind the outcomes, plans, texts)."""
    shown = {key for key, _ in results(summary)}
    return [(key, summary[key]) for key in _reported(summary or {}) if key not in shown]


def _reported(summary: dict) -> list[str]:
    return [key for key in summary if key not in BOOKKEEPING and key not in SETTINGS_KEYS]


def settings(summary: dict | None) -> list[tuple[str, object]]:
    if not summary:
        return []
    merged = {}
    for key in SETTINGS_KEYS:
        if isinstance(summary.get(key), dict):
            merged.update(summary[key])
    return list(merged.items())


def headline(summary: dict | None) -> str:
    """One line for the overview table: the first lesson outcome, cut at a word boundary."""
    path = HEADLINES.get((summary or {}).get("notebook", ""), "")
    value = summary
    for key in path.split(".") if path else ():
        value = value.get(key) if isinstance(value, dict) else None
    pairs = [(path.split(".")[-1], value)] if path and value is not None else results(summary)[:1]
    return "; ".join(f"{label(k)}: {plain(v)}" for k, v in pairs) if pairs else "-"


def figures(summary: dict | None, out: Path, name: str) -> list[dict]:
    """The notebook's images that exist: path relative to the report, caption, natural size."""
    if not summary:
        return []
    captions = summary.get("captions") or {}
    found = []
    for image in summary.get("images", []):
        path = Path(out) / name / image
        if not path.is_file():
            continue
        size = _image_size(path)
        found.append({"src": (Path(name) / image).as_posix(), "caption": captions.get(image) or _caption(image),
                      "width": size[0], "height": size[1]})
    return found


def write(results_, out: Path, profile: str) -> tuple[Path, Path]:
    out = Path(out)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    failed = sum(r.status != "ok" for r in results_)
    title = f"Run report: {len(results_) - failed} of {len(results_)} notebooks passed (profile {profile}, {stamp})"
    pages = {r.name: notebook_page(r.executed) for r in results_}
    md_path = persist.atomic_write_text(out / "report.md", markdown(results_, out, title, pages))
    html_path = persist.atomic_write_text(out / "report.html", page(results_, out, title, pages))
    return md_path, html_path


def notebook_page(executed: Path) -> Path | None:
    """The executed notebook rendered as a web page (nbconvert) next to it; None when it cannot be rendered."""
    if not Path(executed).is_file():
        return None
    try:
        import nbconvert
        import nbformat
    except ImportError:
        return None
    try:
        notebook = nbformat.read(executed, as_version=4)
        body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    except Exception:  # a notebook cut off mid-write by a timeout: the report still links the .ipynb
        return None
    return persist.atomic_write_text(Path(executed).with_suffix(".html"), body)


# --- Markdown ---------------------------------------------------------------------------------------------------

def markdown(results_, out: Path, title: str, pages: dict) -> str:
    md = [f"# {title}", "", "| notebook | status | time (s) | result |", "|---|---|---|---|"]
    for r in results_:
        md.append(f"| [{r.name}](#{r.name}) | {r.status} | {r.seconds:.1f} | {headline(r.summary).replace('|', '/')} |")
    for r in results_:
        md += ["", f"## {r.name}: {r.status}", ""]
        if r.error:
            md += ["```", r.error, "```", ""]
        pairs = results(r.summary)
        if pairs:
            md += ["**Results**", ""] + [f"- {label(k)}: {plain(v, limit=None)}" for k, v in pairs] + [""]
        for figure in figures(r.summary, out, r.name):
            md += [f"[![{figure['caption']}]({figure['src']})]({figure['src']})", f"*{figure['caption']}*", ""]
        files = _files(r.summary, out)
        if files:
            md += ["**Files**", ""] + [f"- [{text}]({href})" for text, href in files] + [""]
        md.append(_notebook_links_md(r, out, pages.get(r.name)))
        more = details(r.summary)
        if more:
            md += ["", "More details: " + "; ".join(f"{label(k)}: {plain(v)}" for k, v in more)]
        chosen = settings(r.summary)
        if chosen:
            md += ["", "Settings: " + ", ".join(f"{k} = {plain(v, limit=None)}" for k, v in chosen)]
        if r.summary and r.summary.get("timings"):
            md += ["", "Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.summary["timings"].items())]
    return "\n".join(md) + "\n"


def _notebook_links_md(r, out: Path, rendered: Path | None) -> str:
    notebook = _href(r.executed, out)
    if rendered:
        return f"Executed notebook: [page]({_href(rendered, out)}) ([.ipynb]({notebook}))"
    return f"Executed notebook: [.ipynb]({notebook})"


# --- HTML -------------------------------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:12px;color:#222;
overflow-wrap:break-word}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
table.overview{width:100%;table-layout:fixed}.overview td{overflow-wrap:anywhere}
.overview th:nth-child(1){width:28%}.overview th:nth-child(2){width:5.5em}.overview th:nth-child(3){width:5em}
.ok .status{color:#080}.failed .status,.timeout .status{color:#b00;font-weight:bold}
.error{background:#fee;border:1px solid #e99;padding:8px;white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%}
.figures{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0;max-width:100%}figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figure img.small{image-rendering:pixelated}figcaption{font-size:.9em;color:#444;max-width:100%}
dl{margin:.3em 0}dt{font-weight:600}dd{margin:0 0 .4em 1.2em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}.scroll table{font-size:.85em}.scroll td{overflow-wrap:normal;min-width:3em}
.scroll th{white-space:nowrap}
details{margin:.6em 0}summary{cursor:pointer}
@media (max-width:600px){body{font-size:15px;padding:8px}td,th{padding:3px}
.overview th:nth-child(2),.overview th:nth-child(3){width:3.6em}.overview{font-size:.9em}}
"""


def page(results_, out: Path, title: str, pages: dict) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr class='{esc(r.status)}'><td><a href='#{esc(r.name)}'>{esc(r.name)}</a></td>"
        f"<td class='status'>{esc(r.status)}</td><td>{r.seconds:.1f}</td><td>{esc(headline(r.summary))}</td></tr>"
        for r in results_)
    sections = "".join(_section(r, out, pages.get(r.name)) for r in results_)
    return (f"<!doctype html><html lang='en'><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style><h1>{esc(title)}</h1><table class='overview'><tr><th>notebook</th><th>status</th><th>time (s)</th>"
            f"<th>result</th></tr>{rows}</table>{sections}</html>")


def _section(r, out: Path, rendered: Path | None) -> str:
    esc = html.escape
    parts = [f"<h2 id='{esc(r.name)}'>{esc(r.name)}: <span class='status'>{esc(r.status)}</span></h2>"]
    if r.error:
        parts.append(f"<pre class='error'>{esc(r.error)}</pre>")
    pairs = results(r.summary)
    if pairs:
        parts.append("<h3>Results</h3><dl>" + "".join(f"<dt>{esc(label(k))}</dt><dd>{_html_value(v, out)}</dd>"
                                                    for k, v in pairs) + "</dl>")
    shown = figures(r.summary, out, r.name)
    if shown:
        parts.append("<div class='figures'>" + "".join(_figure(f) for f in shown) + "</div>")
    files = _files(r.summary, out)
    if files:
        parts.append("<h3>Files</h3><ul>" + "".join(f"<li><a href='{esc(href)}'>{esc(text)}</a></li>"
                                                   for text, href in files) + "</ul>")
    notebook = esc(_href(r.executed, out))
    if rendered:
        parts.append(f"<p>Executed notebook: <a href='{esc(_href(rendered, out))}'>open as a page</a> "
                     f"(<a href='{notebook}' download>.ipynb</a>)</p>")
    else:
        parts.append(f"<p>Executed notebook: <a href='{notebook}' download>.ipynb</a></p>")
    more = details(r.summary)
    if more:
        parts.append("<details><summary>More details</summary><dl>" + "".join(
            f"<dt>{esc(label(k))}</dt><dd>{_html_value(v, out)}</dd>" for k, v in more) + "</dl></details>")
    chosen = settings(r.summary)
    if chosen:
        parts.append("<details><summary>Settings</summary><dl>" + "".join(
            f"<dt>{esc(k)}</dt><dd>{_html_value(v, out)}</dd>" for k, v in chosen) + "</dl></details>")
    if r.summary and r.summary.get("timings"):
        parts.append("<details><summary>Timings</summary><p>" + esc(", ".join(
            f"{k} {v:.2f} s" for k, v in r.summary["timings"].items())) + "</p></details>")
    return "<section>" + "".join(parts) + "</section>"


def _figure(figure: dict) -> str:
    esc = html.escape
    width, height, src, caption = figure["width"], figure["height"], esc(figure["src"]), esc(figure["caption"])
    scale = 2 if 0 < width <= 128 and 0 < height <= 128 else 1  # 64 px lab images: readable, still sharp
    size = f" width='{width * scale}' height='{height * scale}'" if width else ""
    shape = f" style='width:{width * scale}px'" if width else ""
    small = " class='small'" if scale > 1 else ""
    return (f"<figure{shape}><a href='{src}' target='_blank'><img src='{src}' alt='{caption}'{size}{small}></a>"
            f"<figcaption>{caption}</figcaption></figure>")


def _html_value(value, out: Path, depth: int = 0) -> str:
    esc = html.escape
    if isinstance(value, dict) and value and depth < 2:
        if _no_tables(value) and len(plain(value, limit=None)) <= 300:  # short enough to read on one line
            return esc(plain(value, limit=None))
        return "<dl>" + "".join(f"<dt>{esc(str(k))}</dt><dd>{_html_value(v, out, depth + 1)}</dd>"
                                for k, v in value.items()) + "</dl>"
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value) and depth < 2:
        columns = list(dict.fromkeys(key for row in value for key in row))
        head = "".join(f"<th>{esc(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(plain(row.get(c, ''), limit=None))}</td>" for c in columns)
                       + "</tr>" for row in value)
        return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"
    link = _file_link(value, out)
    if link:
        return f"<a href='{esc(link)}'>{esc(str(value))}</a>"
    return esc(plain(value, limit=None))


# --- values -----------------------------------------------------------------------------------------------------

def label(key: str) -> str:
    return str(key).replace("_", " ")


def plain(value, limit: int | None = SHORT) -> str:
    """A value as short readable text; cut (with "...") only at a word boundary."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif _is_scalar_list(value) and value:
        text = "[" + ", ".join(plain(v, limit=None) for v in value) + "]"
    elif isinstance(value, dict) and value and _no_tables(value):
        text = ", ".join(f"{k}: ({plain(v, limit=None)})" if isinstance(v, dict) else f"{k}: {plain(v, limit=None)}"
                         for k, v in value.items())
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    return _cut(text, limit) if limit else text


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return (cut if len(cut) > limit // 2 else text[:limit]) + " ..."


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _no_tables(value) -> bool:
    """True when no list of records (a table) is inside `value`."""
    if isinstance(value, dict):
        return all(_no_tables(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_scalar(v) for v in value)
    return True


def _is_scalar_list(value) -> bool:
    return isinstance(value, list) and all(_is_scalar(v) for v in value)


def _file_link(value, out: Path) -> str | None:
    """A link for a string that names an existing file or folder; None for any other value."""
    if not isinstance(value, str) or not value or len(value) > 500 or "\n" in value:
        return None
    path = Path(value)
    if not path.is_absolute() or not path.exists():
        return None
    return _href(path, out)


def _files(summary: dict | None, out: Path) -> list[tuple[str, str]]:
    """Every file or folder the summary names (at any depth, images aside), as (text, link)."""
    found: dict[str, str] = {}

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        else:
            link = _file_link(value, out)
            if link:
                found.setdefault(link if not link.startswith("file:") else str(value), link)

    for key, value in (summary or {}).items():
        if key not in BOOKKEEPING and key not in SETTINGS_KEYS:
            walk(value)
    return list(found.items())


def _href(path: Path, out: Path) -> str:
    """A relative link when the target is inside the report's folder (the folder can move), else a file:// URL."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path(out).absolute()).as_posix()
    except ValueError:
        return path.as_uri()


def _caption(image: str) -> str:
    return Path(image).stem.replace("_", " ").replace("-", " ")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.size
    except Exception:  # not an image PIL reads: show it without a size
        return 0, 0
