"""Prints how long `import nbhelpers` takes (target: at most 0.5 s) and each notebook's time under `tiny`.

    python benchmarks/bench_startup.py            # import time + every notebook
    python benchmarks/bench_startup.py --import-only
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

IMPORT_TARGET_S = 0.5


def import_seconds(repeats: int = 7) -> list[float]:
    code = "import time; t = time.perf_counter(); import nbhelpers, nbhelpers.cli; print(time.perf_counter() - t)"
    return [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--import-only", action="store_true")
    args = parser.parse_args()

    times = import_seconds()
    median = statistics.median(times)
    verdict = "ok" if median <= IMPORT_TARGET_S else "TOO SLOW"
    print(f"import nbhelpers: median {median * 1000:.1f} ms over {len(times)} runs "
          f"(max {max(times) * 1000:.1f} ms; target {IMPORT_TARGET_S * 1000:.0f} ms) {verdict}")
    if args.import_only:
        return

    from nbhelpers import runner

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        results = runner.run(None, profile="tiny", out=out, echo=lambda line: None)
        total = time.perf_counter() - start
    print(f"{'notebook':<22} {'status':<8} {'seconds':>8}")
    for result in results:
        print(f"{result.name:<22} {result.status:<8} {result.seconds:8.1f}")
    print(f"{'all notebooks':<22} {'':<8} {total:8.1f}")


if __name__ == "__main__":
    main()
