"""`nbhelpers bench --models tiny --steps 4,8 --samplers "Euler,DPM++ 2M" --repeats 3 --out DIR`."""

from __future__ import annotations

from nbhelpers import checks


def _list(name: str, text: str, kind=str) -> list:
    values = [v.strip() for v in str(text).split(",") if v.strip()]
    if not values:
        raise checks.ParameterError(name, text, "a comma-separated list with at least one value")
    if kind is int:
        try:
            return [int(v) for v in values]
        except ValueError:
            raise checks.ParameterError(name, text, "comma-separated integers, e.g. 4,8") from None
    if kind is bool:
        mapping = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
        if any(v.lower() not in mapping for v in values):
            raise checks.ParameterError(name, text, "comma-separated on/off values, e.g. off,on")
        return [mapping[v.lower()] for v in values]
    return values


def _bench(args) -> int:
    from nbhelpers import persist
    from nbhelpers.bench import Grid, markdown, run, write

    persist.check_writable(args.out, "--out")  # before the grid runs, not after (its results would be lost)
    from nbhelpers.bench import models

    names = _list("models", args.models)
    grid = Grid(models=models.with_random_weights(names) if args.random_weights else names, dtypes=_list("dtypes", args.dtypes),
                samplers=_list("samplers", args.samplers), steps=_list("steps", args.steps, int),
                resolutions=_list("resolutions", args.resolutions, int), batches=_list("batches", args.batches, int),
                attention=_list("attention", args.attention), compile=_list("compile", args.compile, bool),
                channels_last=_list("channels_last", args.channels_last, bool), repeats=args.repeats,
                warmup=args.warmup, seed=args.seed, threads=args.threads).check()
    rows = run(grid)
    paths = write(rows, args.out, title="nbhelpers bench")
    print(markdown(rows), end="")
    if any(r["weights"].startswith("RANDOM") for r in rows):
        print("note: random-weight rows measure speed and memory only; quality figures need real weights")
    print(f"results: {paths['csv']}, {paths['markdown']}, {paths['plot']}")
    return 0


def add_parser(subparsers) -> None:
    verb = subparsers.add_parser("bench", help="time a grid of models x settings: it/s, s/image, peak memory")
    verb.add_argument("--models", default="tiny", help="comma-separated: tiny, random:sd15, random:sdxl, sd15, ...")
    verb.add_argument("--dtypes", default="fp32", help="fp32, fp16, bf16 (comma-separated)")
    verb.add_argument("--samplers", default="DPM++ 2M", help='A1111 names, e.g. "Euler,DPM++ 2M"')
    verb.add_argument("--steps", default="8", help="denoising steps, e.g. 4,8")
    verb.add_argument("--resolutions", default="64", help="square image sides, multiples of 8")
    verb.add_argument("--batches", default="1", help="images per call")
    verb.add_argument("--attention", default="sdpa", help="sdpa, eager")
    verb.add_argument("--compile", default="off", help="torch.compile the denoiser: off, on")
    verb.add_argument("--channels-last", dest="channels_last", default="off", help="channels_last memory format")
    verb.add_argument("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    verb.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    verb.add_argument("--seed", type=int, default=0)
    verb.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    verb.add_argument("--random-weights", action="store_true",
                      help="time the real architectures with random weights (sd15 -> random:sd15): nothing downloaded, "
                           "speed and memory only")
    verb.add_argument("--out", default="outputs/bench", help="folder for results.csv/.md/.png")
    verb.set_defaults(handler=_bench)
