"""What notebook 06 runs per profile, and the published T4 figures it shows next to its own measurements."""

from __future__ import annotations

from nbhelpers.bench.harness import Grid

# Published figures, each with its source: not measured here, and labelled so wherever they are shown.
PUBLISHED_T4 = [
    {"model": "sd15", "what": "512x512, fp16 + SDPA", "value": 6.9, "unit": "it/s",
     "source": "diffusers benchmark table (published)"},
    {"model": "sdxl", "what": "1024x1024, fp16", "value": 1.15, "unit": "it/s",
     "source": "diffusers benchmark table (published)"},
    {"model": "mixtral-8x7b", "what": "2-bit experts + LRU expert cache", "value": 2.09, "unit": "tok/s",
     "source": "mixtral-offloading, Eliseev & Mazur 2023 (published)"},
    {"model": "mixtral-8x7b", "what": "naive accelerate offloading", "value": 0.66, "unit": "tok/s",
     "source": "mixtral-offloading, Eliseev & Mazur 2023 (published)"},
]


def grid_for(profile: str, gpu: str = "t4", models=None, steps=None, samplers=None, repeats=None) -> Grid:
    """tiny: the tiny pipeline on the CPU, two samplers x two step counts (seconds). t4 and up: every diffusion
    model the planner says fits `gpu`, real weights, at its own resolution. In a rehearsal: the random-weight
    twins of those that build offline (SD 1.5, SDXL; the DiT pipelines need a T5 tokenizer), at 64 px, once."""
    if profile == "tiny":
        return Grid(models=models or ["tiny"], steps=steps or [4, 8], samplers=samplers or ["Euler", "DPM++ 2M"],
                    resolutions=[64], repeats=repeats or 3, warmup=1, threads=1).check()
    from nbhelpers import rehearsal
    from nbhelpers.plan import configs, plan

    fitting = [m for m in configs.DIFFUSION if plan(m, gpu)["verdict"]]
    if rehearsal.enabled():  # random twins of what can be built offline, at the rehearsal's smallest size, in
        # bfloat16 (the CPU's 16-bit type, as the rehearsal's SDXL is stored; the GPU grid's is fp16)
        from nbhelpers.bench import models as bench_models

        twins = bench_models.with_random_weights([m for m in models or fitting if m in bench_models.RANDOM_OK])
        return Grid(models=twins, dtypes=["bf16"], steps=steps or [rehearsal.override("txt2img", "steps")],
                    samplers=samplers or ["DPM++ 2M Karras"], resolutions=[rehearsal.override("txt2img", "width")],
                    repeats=repeats or 1, warmup=0).check()
    return Grid(models=models or fitting, dtypes=["fp16"], steps=steps or [20],
                samplers=samplers or ["DPM++ 2M Karras"], resolutions=[512], repeats=repeats or 3).check()


def side_by_side(rows) -> list[dict]:
    """Published T4 figures next to this run's own, each row saying which is which."""
    table = [{"model": p["model"], "setting": p["what"], "value": p["value"], "unit": p["unit"], "kind": p["source"]}
             for p in PUBLISHED_T4]
    for row in rows:
        table.append({"model": row["model"], "setting": f"{row['resolution']}px, {row['dtype']}, {row['sampler']}, "
                                                        f"{row['steps']} steps",
                      "value": row["it_per_s"], "unit": "it/s",
                      "kind": f"measured here ({row['device']}, {row['weights']})"})
    return table
