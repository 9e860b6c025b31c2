"""`nbhelpers train lora|dreambooth ...` and `python -m nbhelpers.train ...`: flags map one to one onto TrainConfig.

Examples:
    nbhelpers train lora --data data/train/lora --output outputs/my-lora --profile tiny --steps 40
    nbhelpers train lora --base train_sdxl --data my_images --output outputs/my-xl-lora     # SDXL (T4: 1024 px)
    nbhelpers train dreambooth --data my_dog --instance-prompt "a photo of sks dog" --class-prompt "a photo of a dog"
    accelerate launch --multi_gpu --num_processes 2 -m nbhelpers.train lora --data ... --output ...   # Kaggle 2xT4
A killed run continues with the same command plus `--resume latest`. Flags left out come from the profile.
"""

from __future__ import annotations

import argparse
import sys


# flag, type, help ("flag" is the TrainConfig field with dashes); None type means an on/off switch.
OPTIONS = [
    ("data", str, "folder of images (+ .txt captions for lora)"),
    ("output", str, "new folder for checkpoints and results, never overwritten (default: <workspace>/train/"
                    "<mode>-<settings fingerprint>, which the same command with --resume latest finds again)"),
    ("profile", str, "tiny, t4, large or auto: base model and memory settings (default auto: from the GPU)"),
    ("base", str, "the model to train: train_base (default: the profile's SD 1.5; the lab SD under tiny), "
                  "train_sdxl (SDXL base 1.0; a random miniature under tiny), tiny:sdxl, lab:sd, a Hub id of an "
                  "SD 1.x or SDXL model, or a local diffusers folder"),
    ("seed", int, "random seed (default 0)"),
    ("steps", int, "optimizer steps"),
    ("batch-size", int, "images per process and step"),
    ("gradient-accumulation", int, "micro-batches per optimizer step"),
    ("learning-rate", float, "AdamW learning rate"),
    ("lr-scheduler", str, "constant, constant_with_warmup, linear or cosine"),
    ("warmup-steps", int, "learning-rate warm-up steps"),
    ("resolution", int, "square training size in pixels"),
    ("rank", int, "LoRA rank"),
    ("lora-alpha", float, "LoRA alpha (scale = alpha / rank; default = rank)"),
    ("target-modules", str, "comma-separated UNet modules for the LoRA (default to_q,to_k,to_v,to_out.0)"),
    ("train-text-encoder", None, "also train a LoRA on the text encoder"),
    ("full-finetune", None, "dreambooth: train the whole UNet instead of a LoRA (needs ~24 GB with Adam)"),
    ("mixed-precision", str, "no, fp16 (T4) or bf16 (Ampere and newer)"),
    ("gradient-checkpointing", "bool", "true/false: recompute activations to save memory"),
    ("use-8bit-adam", "bool", "true/false: bitsandbytes AdamW8bit (CUDA only; plain AdamW otherwise)"),
    ("snr-gamma", float, "min-SNR weighting gamma, e.g. 5 (default off)"),
    ("cache-latents", "bool", "true/false: encode images with the VAE once"),
    ("instance-prompt", str, "dreambooth: prompt with the identifier, e.g. 'a photo of sks dog'; lora: caption "
                             "for images without a .txt"),
    ("class-prompt", str, "dreambooth: the plain class prompt; turns on prior preservation"),
    ("num-class-images", int, "dreambooth: class images to generate (cached)"),
    ("prior-loss-weight", float, "dreambooth: weight of the prior loss (default 1.0)"),
    ("class-image-steps", int, "dreambooth: denoising steps per class image (default: the profile's)"),
    ("class-data", str, "folder caching class images (default: beside --output)"),
    ("checkpoint-every", int, "save a checkpoint every K steps"),
    ("keep-checkpoints", int, "how many recent checkpoints to keep"),
    ("resume", str, "'latest' or a checkpoint folder"),
    ("fresh-if-missing", None, "with --resume latest: start from step 0 when there is no checkpoint"),
    ("validation-every", int, "validation images every N steps (0 = off)"),
    ("validation-prompt", str, "a validation prompt (repeat the flag for several)"),
    ("no-progress", None, "no progress bar"),
    ("random-weights", None, "dress rehearsal of --profile t4/large: the base model's real architecture with random "
                             "weights on this machine, the rehearsal's fewest steps and smallest size, nothing "
                             "downloaded; the result is noise"),
]


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, kind, text in OPTIONS:
        if kind is None:
            parser.add_argument(f"--{flag}", action="store_true", help=text)
        elif flag == "validation-prompt":
            parser.add_argument(f"--{flag}", action="append", default=[], help=text)
        else:
            parser.add_argument(f"--{flag}", type=_bool if kind == "bool" else kind, default=None, help=text)


def config_from(args):
    from nbhelpers.train.config import UNET_TARGETS, TrainConfig

    values = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, _, _ in OPTIONS}
    values["mode"] = args.mode
    values["progress"] = not values.pop("no_progress")
    if values.pop("random_weights"):
        _start_rehearsal(values["profile"])
    values["validation_prompts"] = tuple(values.pop("validation_prompt"))
    values["target_modules"] = tuple(t.strip() for t in values["target_modules"].split(",")) \
        if values["target_modules"] else UNET_TARGETS
    values["profile"] = values["profile"] or "auto"
    values["seed"] = 0 if values["seed"] is None else values["seed"]
    values["data"] = values["data"] or ""
    if values["output"]:
        return TrainConfig(**values)
    from nbhelpers import persist

    return TrainConfig(**{**values, "output": ""}).with_output(persist.workspace("") / "train")


def _start_rehearsal(profile) -> None:
    """Turn the rehearsal on for this process (the loaders and the profile read it), for t4 and large only."""
    import os

    from nbhelpers import checks, rehearsal

    if profile not in ("t4", "large"):
        raise checks.ParameterError("--random-weights", profile or "auto", "with --profile t4 or large (a rehearsal "
                                    "of those profiles; tiny already trains small offline models)")
    os.environ[rehearsal.ENV] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing to download: fail loudly if anything tries


def _handle(args) -> int:
    from nbhelpers.train.loop import train

    result = train(config_from(args))
    if result.files:
        print("wrote " + ", ".join(str(path) for path in result.files.values()))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `train` verb to the nbhelpers command line."""
    verb = subparsers.add_parser("train", help="LoRA or DreamBooth training (also: accelerate launch -m nbhelpers.train)")
    _fill(verb)
    return verb


def _fill(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", required=True)
    for mode, text in (("lora", "LoRA on a folder of captioned images"),
                       ("dreambooth", "DreamBooth: a subject from a few images, with prior preservation")):
        add_arguments(modes.add_parser(mode, help=text, description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.set_defaults(handler=_handle)


def main(argv=None) -> int:
    from nbhelpers.guard import guarded

    parser = argparse.ArgumentParser(prog="python -m nbhelpers.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _fill(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    return guarded("nbhelpers train", args.handler, args, "--debug" in argv)
