"""How much does nbhelpers add on top of diffusers? Same pipeline, same settings, timed both ways.

    HF_HUB_OFFLINE=1 python benchmarks/bench_generate.py [--profile tiny] [--repeats 7] [--steps 10] [--threads 1]

nbhelpers path: Engine.txt2img (checks, sampler lookup, A1111 parsing + compel embeddings, per-image seeds,
out-of-memory guard). Direct path: the pipeline called with the prompt strings and the same generators.
The two runs alternate, so a slow moment of the machine hits both; medians are compared. Goal: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--num-images", type=int, default=2)
    parser.add_argument("--sampler", default="DPM++ 2M Karras")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy shared CPU, 1 thread gives steadier timings

    from nbhelpers.diffusion import Engine, samplers
    from nbhelpers.diffusion.generate import cpu_threads

    engine = Engine(args.profile, say=lambda message: None)
    pipe = engine.pipeline("txt2img")
    samplers.use(pipe, args.sampler)  # both paths run the same scheduler object
    width, height = engine.profile.default("txt2img", "width"), engine.profile.default("txt2img", "height")
    prompt, negative = "a lighthouse on a cliff at dusk, dramatic sky", "blurry, lowres"
    settings = {"num_inference_steps": args.steps, "guidance_scale": 7.5, "width": width, "height": height}

    def direct():
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(args.num_images)]
        with cpu_threads(pipe):  # the same thread setting nbhelpers uses, so only nbhelpers' own work differs
            return pipe(prompt, negative_prompt=negative, num_images_per_prompt=args.num_images,
                        generator=generators, **settings).images

    def through_nbhelpers():
        return engine.txt2img(prompt, negative, sampler=args.sampler, steps=args.steps, guidance_scale=7.5, seed=0,
                              width=width, height=height, num_images=args.num_images).images

    def timed(fn):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    direct(), through_nbhelpers()  # warm-up: first calls build caches
    times = {"direct": [], "nbhelpers": []}
    for _ in range(args.repeats):
        times["direct"].append(timed(direct))
        times["nbhelpers"].append(timed(through_nbhelpers))
    medians = {name: statistics.median(values) for name, values in times.items()}
    with cpu_threads(pipe):
        threads = torch.get_num_threads()
    ratio = medians["nbhelpers"] / medians["direct"]
    print(f"profile {engine.profile.name}, {args.num_images} image(s) {width}x{height}, {args.steps} steps, "
          f"{args.sampler}, {args.repeats} repeats, torch threads during generation {threads}")
    for name, values in times.items():
        print(f"  {name:10s} median {medians[name] * 1000:8.1f} ms   (min {min(values) * 1000:.1f}, "
              f"max {max(values) * 1000:.1f})")
    print(f"  ratio nbhelpers / direct = {ratio:.3f} ({'within' if ratio <= 1.05 else 'ABOVE'} the 1.05 goal)")


if __name__ == "__main__":
    main()
