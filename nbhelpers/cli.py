"""The `nbhelpers` command line (also `python -m nbhelpers`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nbhelpers.checks import ParameterError


def _doctor(args) -> int:
    from nbhelpers import doctor

    report = doctor.report()
    print(report.json() if args.json else report.text())
    return 0


def _run(args) -> int:
    from nbhelpers import runner

    overrides = {name: runner.parse_value(value) for name, value in (args.parameter or [])}
    results = runner.run(args.notebooks, profile=args.profile, out=args.out, overrides=overrides,
                         timeout=args.timeout, folder=args.dir)
    failed = [r.name for r in results if r.status != "ok"]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed; report: {args.out}/report.html")
    return 1 if failed else 0


def _tiny(args) -> int:
    from nbhelpers import tiny

    start = time.perf_counter()
    for name, folder in tiny.build_all(args.out).items():
        print(f"{name:<11} {folder}")
    print(f"ready in {time.perf_counter() - start:.1f} s")
    return 0


def parser() -> argparse.ArgumentParser:
    from nbhelpers.profiles import PROFILE_NAMES

    top = argparse.ArgumentParser(prog="nbhelpers", description="Run and check the MoE + Stable Diffusion curriculum.")
    verbs = top.add_subparsers(dest="verb", required=True)

    doctor = verbs.add_parser("doctor", help="runtime, GPU, memory, disk, versions and known problems")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(handler=_doctor)

    run = verbs.add_parser("run", help="execute notebooks with papermill and write report.md/report.html")
    run.add_argument("notebooks", nargs="*", help="names such as 00_setup or 02 (default: all)")
    run.add_argument("--profile", default="tiny", help="one of " + ", ".join(PROFILE_NAMES) + " (default: tiny)")
    run.add_argument("--out", default="outputs/run", help="folder for executed notebooks, outputs and the report")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (JSON or text), e.g. -p steps 20")
    run.add_argument("--timeout", type=float, default=900, help="seconds allowed per notebook (default 900)")
    run.add_argument("--dir", type=Path, default=None, help="folder of notebooks (default: the curriculum's)")
    run.set_defaults(handler=_run)

    tiny = verbs.add_parser("tiny", help="build the offline tiny models (cached; rebuilt if damaged)")
    tiny.add_argument("--out", default=None, help="cache folder (default ~/.cache/nbhelpers/tiny)")
    tiny.set_defaults(handler=_tiny)

    from nbhelpers.train.cli import add_parser as add_train_parser
    add_train_parser(verbs)
    from nbhelpers.plan.cli import add_parser as add_plan_parser
    from nbhelpers.bench.cli import add_parser as add_bench_parser
    add_plan_parser(verbs)
    add_bench_parser(verbs)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except ParameterError as error:
        print(f"nbhelpers {args.verb}: error: {error}", file=sys.stderr)
        return 2
