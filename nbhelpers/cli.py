"""The `nbhelpers` command line (also `python -m nbhelpers`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nbhelpers.guard import DEBUG_ENV, guarded


def _doctor(args) -> int:
    from nbhelpers import doctor

    report = doctor.report(check_access=args.check_access)
    print(report.json() if args.json else report.text())
    return 0


def _run(args) -> int:
    from nbhelpers import runner

    overrides = runner.parse_parameters(args.parameter or [])
    results = runner.run(args.notebooks, profile=args.profile, out=args.out, overrides=overrides,
                         timeout=args.timeout, folder=args.dir,
                         random_weights=args.random_weights)
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
    top.add_argument("--debug", action="store_true",
                     help=f"show the traceback behind an error (also: {DEBUG_ENV}=1); accepted after the verb too")
    verbs = top.add_subparsers(dest="verb", required=True)

    doctor = verbs.add_parser("doctor", help="runtime, GPU, memory, disk, versions and known problems")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--check-access", action="store_true",
                        help="ask the Hub whether your token may download the gated default models (network)")
    doctor.set_defaults(handler=_doctor)

    run = verbs.add_parser("run", help="execute notebooks with papermill and write report.md/report.html")
    run.add_argument("notebooks", nargs="*", help="names such as 00_setup or 02 (default: all)")
    run.add_argument("--profile", default="tiny", help="one of " + ", ".join(PROFILE_NAMES) + " (default: tiny)")
    run.add_argument("--out", default="outputs/run", help="folder for executed notebooks, outputs and the report")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (JSON or text), e.g. -p steps 20")
    run.add_argument("--timeout", type=float, default=900,
                     help="seconds allowed per notebook (default 900; inf: no limit)")
    run.add_argument("--random-weights", action="store_true",
                     help="dress rehearsal: the profile's real architectures with random weights on the CPU, "
                          "smallest settings, nothing downloaded; outputs are noise")
    run.add_argument("--dir", type=Path, default=None, help="folder of notebooks (default: the curriculum's)")
    run.set_defaults(handler=_run)

    tiny = verbs.add_parser("tiny", help="build the offline tiny models (cached; rebuilt if damaged)")
    tiny.add_argument("--out", default=None, help="cache folder (default ~/.cache/nbhelpers/tiny)")
    tiny.set_defaults(handler=_tiny)

    from nbhelpers.train.cli import add_parser as add_train_parser
    add_train_parser(verbs)
    from nbhelpers.plan.cli import add_parser as add_plan_parser
    from nbhelpers.bench.cli import add_parser as add_bench_parser
    from nbhelpers.serve.cli import add_parser as add_serve_parser
    add_plan_parser(verbs)
    add_bench_parser(verbs)
    add_serve_parser(verbs)
    return top


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere, so that `nbhelpers run 02 --debug` works as well as `nbhelpers --debug run`
    args = parser().parse_args([a for a in argv if a != "--debug"])
    return guarded(f"nbhelpers {args.verb}", args.handler, args, debug)
