"""How fast, how much memory, how good: a benchmark grid over models and settings.

    from nbhelpers import bench
    grid = bench.Grid(models=["tiny"], steps=[4, 8], samplers=["Euler", "DPM++ 2M"], repeats=3)
    rows = bench.run(grid)                 # one dict per grid point: it/s, s/image, peak memory (medians)
    bench.write(rows, "outputs/bench")     # results.csv, results.md, plots
"""

from nbhelpers.bench.harness import Grid, run  # noqa: F401
from nbhelpers.bench.report import markdown, plot, write  # noqa: F401
from nbhelpers.bench.notebook import PUBLISHED_T4, grid_for, side_by_side  # noqa: F401,E402
