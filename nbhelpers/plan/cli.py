"""`nbhelpers plan MODEL [--gpu t4] [--json]`: will it fit, before any download."""

from __future__ import annotations

import json


def _plan(args) -> int:
    from nbhelpers.plan import configs
    from nbhelpers.plan.gpus import get_gpu
    from nbhelpers.plan.verdict import format_plan, plan

    configs.check_model(args.model)  # fail on bad names before the (slow) meta builds
    get_gpu(args.gpu)
    if args.train:
        from nbhelpers.plan import training

        settings = training.profile_settings(args.model, args.gpu, args.train)
        if args.width or args.batch != 1:
            from dataclasses import replace

            settings = replace(settings, resolution=args.width or settings.resolution,
                               batch_size=args.batch if args.batch != 1 else settings.batch_size)
        result = training.training_plan(args.model, args.gpu, args.train, settings)
        print(json.dumps(result, indent=2) if args.json else training.format_training_plan(result))
        return 0
    result = plan(args.model, args.gpu, width=args.width, height=args.height, batch=args.batch,
                  context=args.context, attention=args.attention)
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def add_parser(subparsers) -> None:
    from nbhelpers.plan.gpus import ALIASES, GPUS

    verb = subparsers.add_parser("plan", help="will MODEL fit a GPU? parameters, memory per setting, cheapest fit")
    verb.add_argument("model", help="sd15, sdxl, sd3-medium, flux1-schnell, mixtral-8x7b, t4-moe, tiny-sd, ... or "
                                    "their Hub ids (stable-diffusion-v1-5/stable-diffusion-v1-5, ...)")
    verb.add_argument("--gpu", default="t4", help="one of " + ", ".join(list(GPUS) + list(ALIASES)) + " (default t4)")
    verb.add_argument("--width", type=int, default=None, help="image width (default: the model's own)")
    verb.add_argument("--height", type=int, default=None, help="image height (default: the model's own)")
    verb.add_argument("--batch", type=int, default=1, help="images (or sequences) at once (default 1)")
    verb.add_argument("--context", type=int, default=4096, help="context tokens for the KV cache (LLMs)")
    verb.add_argument("--attention", default="sdpa", help="sdpa (memory-efficient) or eager")
    verb.add_argument("--train", choices=("lora", "dreambooth", "dreambooth-full"), default=None,
                      help="predict the training peak of nbhelpers.train with the GPU's profile settings instead "
                           "(--width sets the training resolution, --batch the batch)")
    verb.add_argument("--json", action="store_true", help="machine-readable output")
    verb.set_defaults(handler=_plan)
