"""The run report: one row per notebook (status, time, key results) and its pictures, as Markdown and HTML."""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

from nbhelpers import persist

SKIP_KEYS = {"notebook", "profile", "requested_profile", "seed", "parameters", "timings", "images"}
MAX_HIGHLIGHTS = 8


def highlights(summary: dict | None) -> list[tuple[str, str]]:
    """Short `key: value` pairs: the summary's own `highlights`, else its first scalar results."""
    if not summary:
        return []
    if isinstance(summary.get("highlights"), dict):
        return [(k, _short(v)) for k, v in summary["highlights"].items()][:MAX_HIGHLIGHTS]
    pairs = []
    for key, value in summary.items():
        if key in SKIP_KEYS:
            continue
        if isinstance(value, dict):
            pairs += [(f"{key}.{k}", _short(v)) for k, v in value.items() if _is_scalar(v)]
        elif _is_scalar(value):
            pairs.append((key, _short(value)))
    return pairs[:MAX_HIGHLIGHTS]


def images(summary: dict | None, out: Path, name: str) -> list[str]:
    """Image paths relative to the report folder."""
    if not summary:
        return []
    return [str(Path(name) / image) for image in summary.get("images", []) if (out / name / image).is_file()]


def write(results, out: Path, profile: str) -> tuple[Path, Path]:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    failed = sum(r.status != "ok" for r in results)
    title = f"Run report: {len(results) - failed} of {len(results)} notebooks passed (profile {profile}, {stamp})"

    md = [f"# {title}", "", "| notebook | status | time (s) | key results |", "|---|---|---|---|"]
    for r in results:
        keys = "; ".join(f"{k}: {v}" for k, v in highlights(r.summary)) or "-"
        md.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {keys.replace('|', '/')} |")
    for r in results:
        md += ["", f"## {r.name}: {r.status}", ""]
        if r.error:
            md += ["```", r.error, "```", ""]
        if r.summary and r.summary.get("timings"):
            md.append("Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.summary["timings"].items()))
        md += [f"![{Path(i).name}]({i})" for i in images(r.summary, out, r.name)]
        md.append(f"Executed notebook: executed/{r.executed.name}")

    esc = html.escape
    rows = "".join(
        f"<tr class='{esc(r.status)}'><td>{esc(r.name)}</td><td>{esc(r.status)}</td><td>{r.seconds:.1f}</td>"
        f"<td>{esc('; '.join(f'{k}: {v}' for k, v in highlights(r.summary)) or '-')}</td></tr>" for r in results)
    sections = ""
    for r in results:
        error = f"<pre class='error'>{esc(r.error)}</pre>" if r.error else ""
        pictures = "".join(f"<img src='{esc(i)}' alt='{esc(Path(i).name)}'>" for i in images(r.summary, out, r.name))
        sections += (f"<h2>{esc(r.name)}: {esc(r.status)}</h2>{error}<div>{pictures}</div>"
                     f"<p><a href='executed/{esc(r.executed.name)}'>executed notebook</a></p>")
    page = (f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{border:1px solid #ccc;padding:4px}"
            "table{border-collapse:collapse}.ok td:nth-child(2){color:green}.failed td:nth-child(2),"
            ".timeout td:nth-child(2){color:#b00}img{max-width:320px;margin:4px;image-rendering:pixelated}"
            f".error{{background:#fee;padding:8px}}</style><h1>{esc(title)}</h1><table><tr><th>notebook</th>"
            f"<th>status</th><th>time (s)</th><th>key results</th></tr>{rows}</table>{sections}")
    md_path = persist.atomic_write_text(Path(out) / "report.md", "\n".join(md) + "\n")
    html_path = persist.atomic_write_text(Path(out) / "report.html", page)
    return md_path, html_path


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
