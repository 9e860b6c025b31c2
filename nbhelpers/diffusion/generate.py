"""Generation: txt2img, img2img and inpainting on one loaded model, reproducible seed by seed.

    studio = Engine("tiny")                                  # nothing loaded yet
    result = studio.txt2img("a red fox, (snow:1.3)", seed=42, num_images=4)
    result.save(run.path("images"), "fox")                   # PNGs with A1111 `parameters`

Seeds: image i of a batch uses seed + i, with its own random generator. So a batch of 4 from seed 42 gives the
same pictures as four single runs with seeds 42, 43, 44, 45: find a good one in a batch, re-make it alone.
The generators live on the CPU, as A1111's "CPU" RNG option: the same seed gives the same starting noise on any
GPU (up to the small numeric differences between GPU types).

One model, several pipelines: img2img and the 4-channel "latent blending" inpainting pipeline are made with
`from_pipe`, which shares the UNet, VAE and text encoder already in memory. Only the dedicated 9-channel
inpainting model (`model="inpaint"`) is a second load, because its UNet has different weights.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers.diffusion import checks, masks, memory, metadata, samplers
from nbhelpers.diffusion.prompts import PromptEncoder
from nbhelpers.profiles import Profile, get_profile

INPAINT_MODELS = ("inpaint", "blend")  # dedicated 9-channel model, or latent blending with the txt2img model
SMALL_MODEL = 10_000_000  # UNet parameters below which CPU threads cost more than they bring


@contextlib.contextmanager
def cpu_threads(pipe):
    """Run a tiny model on one CPU thread. Its layers are so small that handing work between threads costs more
    than the work itself; on a busy 2-core machine two threads made the tiny model 20x slower (measured)."""
    import torch

    unet = getattr(pipe, "unet", None)
    small = (unet is not None and unet.device.type == "cpu"
             and sum(p.numel() for p in unet.parameters()) < SMALL_MODEL)
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def denoising_steps(steps: int, strength: float) -> int:
    """How many steps img2img/inpainting really run: diffusers skips the first (1 - strength) of the schedule."""
    return min(int(steps * strength), steps)


@dataclass
class Generation:
    images: list
    seeds: list[int]
    settings: dict
    changes: list[str] = field(default_factory=list)  # what out-of-memory handling made lighter
    # Inpainting: the pipeline's own pictures, before compositing pasted the unmasked original back over them.
    returned: list = field(default_factory=list)

    def parameters(self, index: int) -> str:
        """The A1111 `parameters` text of image `index`."""
        s = self.settings
        a1111 = {"Steps": s["steps"], "Sampler": s["sampler"], "CFG scale": s["guidance_scale"],
                 "Seed": self.seeds[index], "Size": f"{s['width']}x{s['height']}", "Model": s.get("model"),
                 "Denoising strength": s.get("strength"), "Mask blur": s.get("mask_blur"),
                 "Mode": s["mode"]}
        from nbhelpers import rehearsal

        if rehearsal.enabled():
            a1111["Note"] = rehearsal.NOISE  # a rehearsal picture must never pass for a result
        return metadata.format_parameters(s["prompt"], s["negative_prompt"], **a1111)

    def save(self, folder, stem: str) -> list[Path]:
        """Write `<folder>/<stem>-<seed>.png` for each image, atomically, with its settings inside."""
        return [metadata.save_png(image, Path(folder) / f"{stem}-{seed}.png", self.parameters(i))
                for i, (image, seed) in enumerate(zip(self.images, self.seeds))]


def fit(image, side: int = 512):
    """`image` resized so that its longer side is `side` and both sides are multiples of 8 (what SD takes)."""
    from PIL import Image

    from nbhelpers.images import to_rgb

    scale = side / max(image.size)
    width, height = (max(checks.MIN_SIDE, round(length * scale / 8) * 8) for length in image.size)
    return to_rgb(image).resize((width, height), Image.LANCZOS)


def default_image_path(profile: Profile | str = "t4") -> Path:
    """The profile's shipped input picture for 03_inpainting (drawn by data/images/make_default.py): a house on a
    hill for the real models, a lab shape for `tiny`."""
    from nbhelpers.paths import data_dir

    profile = get_profile(profile) if isinstance(profile, str) else profile
    return data_dir() / "images" / profile.default("inpaint", "image")


class Engine:
    """The pipelines of one profile, loaded on first use, and the generation functions on top of them.

    `pipe` / `inpaint_pipe` may be given (tests, a pipeline you built yourself); otherwise they come from
    `nbhelpers.loaders.load_diffusion`.
    """

    def __init__(self, profile: Profile | str = "auto", pipe=None, inpaint_pipe=None, say=print):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self._pipes = {"txt2img": pipe, "inpaint": inpaint_pipe}
        self._encoders: dict[int, PromptEncoder] = {}
        self.say = say

    # -- pipelines -------------------------------------------------------------------------------------------
    def pipeline(self, kind: str = "txt2img"):
        """"txt2img", "img2img", "blend" (4-channel inpainting) share one model; "inpaint" is the 9-channel one."""
        if self._pipes.get(kind) is None:
            from nbhelpers import loaders

            if kind in ("txt2img", "inpaint"):
                self._pipes[kind] = loaders.load_diffusion(self.profile, kind)
            else:
                base = self.pipeline("txt2img")  # loads first: the loader sets the model cache before imports
                from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

                maker = AutoPipelineForImage2Image if kind == "img2img" else AutoPipelineForInpainting
                self._pipes[kind] = maker.from_pipe(base)
                self._pipes[kind].set_progress_bar_config(disable=True)
        return self._pipes[kind]

    def encoder(self, pipe) -> PromptEncoder:
        key = id(pipe.text_encoder)
        if key not in self._encoders:
            self._encoders[key] = PromptEncoder(pipe)
        return self._encoders[key]

    def model_name(self, task: str) -> str:
        return self.profile.model(task).source.split("/")[-1]

    def default(self, task: str, name: str, value):
        return self.profile.resolve(task, **{name: value})[name]

    # -- generation ------------------------------------------------------------------------------------------
    def txt2img(self, prompt: str, negative_prompt: str = "", *, sampler=None, steps=None, guidance_scale=None,
                seed: int = 0, width=None, height=None, num_images=None) -> Generation:
        s = self._settings("txt2img", prompt, negative_prompt, sampler, steps, guidance_scale, seed, num_images)
        s["width"], s["height"] = self.default("txt2img", "width", width), self.default("txt2img", "height", height)
        checks.settings(**_checked(s), width=s["width"], height=s["height"], max_side=s["max_side"])
        return self._run("txt2img", s, {"width": s["width"], "height": s["height"]})

    def img2img(self, image, prompt: str, negative_prompt: str = "", *, strength=None, sampler=None, steps=None,
                guidance_scale=None, seed: int = 0, num_images=None) -> Generation:
        """Start from `image` instead of pure noise. `strength` 0 returns the input, 1 all but ignores it."""
        s = self._settings("inpaint", prompt, negative_prompt, sampler, steps, guidance_scale, seed, num_images)
        s["strength"] = self.default("inpaint", "strength", strength)
        checks.settings(**_checked(s), strength=s["strength"])
        image = checks.load_image(image, "input_image")
        checks.image_size("input_image", image, s["max_side"])
        s.update(mode="img2img", width=image.width, height=image.height,
                 denoising_steps=denoising_steps(s["steps"], s["strength"]))
        if s["denoising_steps"] == 0:
            return self._unchanged(image, s)
        return self._run("img2img", s, {"image": image, "strength": s["strength"]})

    def inpaint(self, image, mask, prompt: str, negative_prompt: str = "", *, model: str = "inpaint",
                strength=None, mask_blur=None, padding_mask_crop=None, sampler=None, steps=None,
                guidance_scale=None, seed: int = 0, num_images=None) -> Generation:
        """Repaint the white part of `mask`; every pixel where the (blurred) mask is black stays exactly as is."""
        s = self._settings("inpaint", prompt, negative_prompt, sampler, steps, guidance_scale, seed, num_images)
        s["strength"] = self.default("inpaint", "strength", strength)
        s["mask_blur"] = self.default("inpaint", "mask_blur", mask_blur)
        checks.settings(**_checked(s), strength=s["strength"])
        from nbhelpers.checks import choice, integer, number

        choice("model", model, INPAINT_MODELS)
        number("mask_blur", s["mask_blur"], minimum=0, maximum=256)
        if padding_mask_crop is not None:
            integer("padding_mask_crop", padding_mask_crop, minimum=0, maximum=s["max_side"])
        image = checks.load_image(image, "input_image")
        checks.image_size("input_image", image, s["max_side"])
        mask = masks.from_image(checks.load_image(mask, "mask", grey=True), size=image.size)
        mask = masks.blur(mask, s["mask_blur"])
        s.update(mode=f"inpaint ({model})", width=image.width, height=image.height, padding_mask_crop=padding_mask_crop,
                 denoising_steps=denoising_steps(s["steps"], s["strength"]))
        if s["denoising_steps"] == 0:
            return self._unchanged(image, s)
        result = self._run("inpaint" if model == "inpaint" else "blend", s,
                           {"image": image, "mask_image": mask, "strength": s["strength"], "width": image.width,
                            "height": image.height, "padding_mask_crop": padding_mask_crop})
        result.returned = result.images
        result.images = [masks.composite(generated, image, mask) for generated in result.returned]
        return result

    # -- shared steps ----------------------------------------------------------------------------------------
    def _settings(self, task, prompt, negative_prompt, sampler, steps, guidance_scale, seed, num_images) -> dict:
        if seed == checks.RANDOM_SEED:
            seed = random.randint(0, 2**32 - 1)
        return {"mode": task, "prompt": prompt, "negative_prompt": negative_prompt,
                "sampler": self.default(task, "sampler", sampler), "steps": self.default(task, "steps", steps),
                "guidance_scale": self.default(task, "guidance_scale", guidance_scale), "seed": seed,
                "num_images": self.default(task, "num_images", num_images),
                "max_side": self.profile.default(task, "max_side"), "model": self.model_name("txt2img")}

    def _unchanged(self, image, s) -> Generation:
        # 0 denoising steps: there is nothing to denoise, so the answer is the input itself. Running the pipeline
        # would instead return the VAE's reconstruction of it (slightly different) or fail on an empty schedule.
        self.say(f"strength {s['strength']} x {s['steps']} steps = 0 denoising steps: returning the input unchanged.")
        seeds = [s["seed"] + i for i in range(s["num_images"])]
        return Generation([image.copy() for _ in seeds], seeds, _public(s))

    def _run(self, kind: str, s: dict, call_args: dict) -> Generation:
        import torch

        pipe = samplers.use(self.pipeline(kind), s["sampler"])
        s["model"] = self.model_name("inpaint" if kind == "inpaint" else "txt2img")
        def run_batch(seeds):
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
            return pipe(**embeds, num_images_per_prompt=len(seeds),
                        generator=generators, num_inference_steps=s["steps"], guidance_scale=s["guidance_scale"],
                        **call_args).images

        seeds = [s["seed"] + i for i in range(s["num_images"])]
        with cpu_threads(pipe):
            embeds = self.encoder(pipe)(s["prompt"], s["negative_prompt"])
            images, changes = memory.run_in_batches(run_batch, seeds, pipe, say=self.say)
        return Generation(images, seeds, _public(s), changes)


def _checked(s: dict) -> dict:
    keys = ("prompt", "negative_prompt", "sampler", "steps", "guidance_scale", "seed", "num_images")
    return {key: s[key] for key in keys}


def _public(s: dict) -> dict:
    return {key: value for key, value in s.items() if key != "max_side"}
