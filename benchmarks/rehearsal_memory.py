"""After `.ci/rehearsal`: the planner's arithmetic against what the rehearsal measured, as markdown.

    python benchmarks/rehearsal_memory.py [--outputs outputs/rehearsal] [--json FILE]

1. Weights: for every random-weight checkpoint the rehearsal built (<nbhelpers cache>/rehearsal/*/rehearsal.json),
   the planner's parameter count by arithmetic on the SAME (cut) config (`plan.analytic` for the language models;
   the meta-device count of data/configs for the SD pipelines, which are not cut) and its bytes in the rehearsal
   dtype, against the parameters and bytes actually written.
2. Stages: RSS after each notebook stage and the peak so far (summary.json "memory"), next to the planner's weight
   bytes of the model that stage loaded (rehearsal dtype, cut config) and its T4 VRAM verdict for the real model.

CPU float32 (or bfloat16) RSS is not VRAM: no CUDA allocator, no fp16, Python and library overhead included, and
the CPU keeps what the GPU would move. What it checks is the planner's arithmetic (weights = parameters x bytes per
parameter) and how memory grows from stage to stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def planner_parameters(config: str, cuts: dict) -> int:
    """The planner's count for the rehearsal's config (cuts applied)."""
    from nbhelpers.plan import analytic, configs

    if (ROOT / "data" / "configs" / f"{config}.json").is_file():
        values = {**json.loads((ROOT / "data" / "configs" / f"{config}.json").read_text()), **cuts}
        if values["model_type"] == "clip":  # 06's quality judges: the planner does not plan them; meta count
            return configs.count_module(configs.build("transformers", "CLIPModel", values))[0]
        return analytic.moe_decoder(values)  # a language model: arithmetic on the cut config
    # A pipeline: the planner's meta-device count, on the cut config (SDXL's UNet) where there is a cut. (The
    # planner itself knows sd15 and sdxl, not their inpainting twins: `configs.components` refuses those names.)
    total = 0
    for name, (library, class_name) in configs.component_classes(config).items():
        values = {**configs.component_config(config, name), **cuts.get(name, {})}
        total += configs.count_module(configs.build(library, class_name, values))[0]
    return total


def weights_table(cache: Path) -> list[dict]:
    rows = []
    for record_path in sorted(cache.glob("**/rehearsal.json")):  # judges/<name>/ one level deeper
        record = json.loads(record_path.read_text())
        written = record["parameters"]
        written = sum(written.values()) if isinstance(written, dict) else written
        planned = planner_parameters(record["config"], record.get("cuts", {}))
        rows.append({"model": record["model"], "cuts": record.get("cuts") or "none", "dtype": record["dtype"],
                     "planner_parameters": planned, "checkpoint_parameters": written,
                     "planner_gib": round(planned * BYTES[record["dtype"]] / GIB, 3),
                     "checkpoint_gib": round(record["weights_bytes"] / GIB, 3),
                     "agree": planned == written})
    return rows


def stages_table(outputs: Path) -> list[dict]:
    rows = []
    for summary_path in sorted(outputs.glob("*/*/summary.json")):
        summary = json.loads(summary_path.read_text())
        for stage, figures in summary.get("memory", {}).items():
            rows.append({"profile": summary["profile"], "notebook": summary["notebook"], "stage": stage,
                         "seconds": summary.get("timings", {}).get(stage), **figures})
    return rows


def t4_verdicts() -> dict:
    """The planner's T4 verdict (real model, 16-bit, VRAM) for each profile model."""
    from nbhelpers.plan import plan
    from nbhelpers.rehearsal.sources import SOURCES

    verdicts = {}
    for model_id in SOURCES:
        try:
            found = plan(model_id, "t4")
            verdicts[model_id] = f"{found['verdict']}: {found['verdict_gpu_gib']} GiB"
        except Exception as error:  # a model the planner does not know (the inpainting twins)
            verdicts[model_id] = f"not planned ({type(error).__name__})"
    return verdicts


def markdown(weights: list[dict], stages: list[dict], verdicts: dict) -> str:
    lines = ["## Planner arithmetic vs the rehearsal's checkpoints (same cut configs)", "",
             "| model | cut | dtype | planner parameters | written | planner GiB | written GiB | agree | "
             "planner's T4 verdict (real model, VRAM) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in weights:
        lines.append(f"| {r['model']} | {r['cuts']} | {r['dtype']} | {r['planner_parameters']:,} | "
                     f"{r['checkpoint_parameters']:,} | {r['planner_gib']} | {r['checkpoint_gib']} | "
                     f"{'yes' if r['agree'] else 'NO'} | {verdicts.get(r['model'], '')} |")
    lines += ["", "## RSS per notebook stage (CPU, random weights; NOT VRAM)", "",
              "| profile | notebook | stage | s | RSS GiB after | peak RSS GiB so far |", "|---|---|---|---|---|---|"]
    for r in stages:
        lines.append(f"| {r['profile']} | {r['notebook']} | {r['stage']} | {r['seconds']} | {r['rss_gib']} | "
                     f"{r['peak_rss_gib']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    from nbhelpers import persist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", default="outputs/rehearsal", help=".ci/rehearsal's output folder")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    weights = weights_table(persist.nbhelpers_cache() / "rehearsal")
    stages = stages_table(Path(args.outputs))
    verdicts = t4_verdicts()
    print(markdown(weights, stages, verdicts))
    result = {"weights": weights, "stages": stages, "t4_verdicts": verdicts}
    if args.json:
        persist.atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
