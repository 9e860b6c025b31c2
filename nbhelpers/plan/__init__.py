"""Will it fit? A memory planner that reads shipped configs, counts parameters exactly on the meta device and names
the cheapest setting that fits a GPU, before anything is downloaded.

    from nbhelpers import plan
    plan.plan("sdxl", gpu="t4")          # -> dict with components, memory per setting and the verdict
"""


from nbhelpers.plan.verdict import MODELS, format_plan, plan, plan_table  # noqa: E402,F401
