"""A small txt2img panel in the notebook: the controls A1111 users expect, and a gallery.

The widgets only hold values; everything they do goes through `Studio.generate()` and `Studio.randomise()`,
plain methods that tests call without a browser (`studio.generate_button.click()` runs the same code a click
does). Only widgets that exist in ipywidgets 7.7.1 (Colab) and 8.x are used, with no 8-only options.
"""

from __future__ import annotations

import io
import random
import time

from nbhelpers.checks import ParameterError
from nbhelpers.diffusion import metadata, samplers
from nbhelpers.profiles import LAB_PREFIX


class Studio:
    def __init__(self, engine, generate=None, save_dir=None, gallery_size: int = 12):
        import ipywidgets as w

        self.engine = engine
        self.generate_fn = generate or engine.txt2img  # a stand-in in tests
        self.save_dir = save_dir
        self.gallery_size = gallery_size
        self.results = []  # every Generation made here, newest last
        default = lambda name: engine.profile.default("txt2img", name)  # noqa: E731
        max_side = default("max_side")
        wide = {"layout": w.Layout(width="98%"), "style": {"description_width": "110px"}}
        narrow = {"style": {"description_width": "110px"}}

        examples = example_prompts(engine.profile)
        self.examples = w.Dropdown(options=examples, value=examples[0], description="Examples", **wide)
        self.prompt = w.Textarea(value=examples[0], description="Prompt", **wide)
        # The profile's own: under tiny none, since the lab model draws "blurry, lowres" as a grey background.
        self.negative_prompt = w.Textarea(value=default("negative_prompt"), description="Negative prompt", **wide)
        self.sampler = w.Dropdown(options=samplers.available(), value=default("sampler"), description="Sampler", **narrow)
        self.steps = w.IntSlider(value=default("steps"), min=1, max=150, description="Steps", **narrow)
        self.guidance_scale = w.FloatSlider(value=default("guidance_scale"), min=0.0, max=20.0, step=0.5,
                                            description="CFG scale", **narrow)
        self.seed = w.IntText(value=0, description="Seed", **narrow)
        self.randomise_button = w.Button(description="Random seed", tooltip="pick a new random seed")
        self.width = w.BoundedIntText(value=default("width"), min=64, max=max_side, step=8, description="Width", **narrow)
        self.height = w.BoundedIntText(value=default("height"), min=64, max=max_side, step=8, description="Height",
                                       **narrow)
        self.num_images = w.IntSlider(value=min(default("num_images"), 4), min=1, max=8, description="Images", **narrow)
        self.generate_button = w.Button(description="Generate", button_style="primary")
        self.status = w.HTML(value="")
        self.gallery = w.HBox(layout=w.Layout(flex_flow="row wrap"))

        self.examples.observe(lambda change: setattr(self.prompt, "value", change["new"]), names="value")
        self.randomise_button.on_click(lambda _button: self.randomise())
        self.generate_button.on_click(lambda _button: self.generate())
        self.panel = w.VBox([
            self.examples, self.prompt, self.negative_prompt,
            w.HBox([self.sampler, self.steps]), w.HBox([self.guidance_scale, self.num_images]),
            w.HBox([self.seed, self.randomise_button]), w.HBox([self.width, self.height]),
            w.HBox([self.generate_button, self.status]), self.gallery,
        ])

    def settings(self) -> dict:
        return {"prompt": self.prompt.value, "negative_prompt": self.negative_prompt.value,
                "sampler": self.sampler.value, "steps": self.steps.value,
                "guidance_scale": self.guidance_scale.value, "seed": self.seed.value, "width": self.width.value,
                "height": self.height.value, "num_images": self.num_images.value}

    def randomise(self) -> int:
        self.seed.value = random.randint(0, 2**32 - 1)
        return self.seed.value

    def generate(self):
        """What the Generate button does. Bad settings show up in the status line instead of a traceback."""
        import ipywidgets as w

        self.generate_button.disabled = True  # a second click while busy would queue a second run
        self.status.value = "generating..."
        start = time.perf_counter()
        try:
            result = self.generate_fn(**self.settings())
        except ParameterError as error:
            self.status.value = f"<span style='color:#b00'>{_escape(str(error))}</span>"
            return None
        finally:
            self.generate_button.disabled = False
        self.results.append(result)
        if self.save_dir is not None:
            result.save(self.save_dir, "studio")
        pictures = [w.Image(value=_png_bytes(image, result.parameters(i)), format="png",
                            layout=w.Layout(width=f"{max(128, image.width)}px"))
                    for i, image in enumerate(result.images)]
        self.gallery.children = tuple(pictures + list(self.gallery.children))[: self.gallery_size]
        changes = f"; lighter settings: {', '.join(result.changes)}" if result.changes else ""
        self.status.value = (f"{len(result.images)} image(s), seeds {result.seeds[0]}-{result.seeds[-1]}, "
                             f"{time.perf_counter() - start:.1f} s{changes}")
        return result

    def _ipython_display_(self):  # `studio` as the last line of a cell shows the panel
        from IPython.display import display

        display(self.panel)


def example_prompts(profile) -> list[str]:
    """Prompts the profile's model draws well, its default first. A lab model (tiny) knows only its captions:
    a colour and a shape on a background, and composes colour-shape pairs it never saw (the held-out ones)."""
    first = profile.default("txt2img", "prompt")
    if profile.model("txt2img").source.startswith(LAB_PREFIX):
        from nbhelpers.lab import shapes

        specs = [shapes.ShapeSpec("green", "square"), shapes.ShapeSpec("yellow", "star", "black"),
                 shapes.ShapeSpec("blue", "triangle", "gray"), shapes.ShapeSpec("purple", "square"),
                 *(shapes.ShapeSpec(colour, shape) for colour, shape in shapes.HELD_OUT[:2])]
        others = [shapes.caption(spec) for spec in specs]
    else:
        others = ["a red fox in fresh snow, golden hour, (detailed fur:1.2)",
                  "a watercolour painting of a harbour town at sunrise",
                  "portrait of an old sailor, oil painting, dramatic light"]
    return list(dict.fromkeys([first, *others]))


def _png_bytes(image, parameters: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(metadata.KEY, parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
