"""The widget studio's callbacks, driven without a browser."""

from unittest import mock

import pytest

from nbhelpers.diffusion import Engine
from nbhelpers.diffusion.studio import Studio


@pytest.fixture(scope="module")
def engine(random_tiny):
    return Engine(random_tiny, say=lambda message: None)


def test_generate_button_makes_images_with_the_widget_settings(engine, tmp_path):
    studio = Studio(engine, save_dir=tmp_path)
    studio.prompt.value, studio.sampler.value, studio.steps.value = "a red boat", "Euler a", 2
    studio.seed.value, studio.num_images.value, studio.guidance_scale.value = 5, 2, 4.0
    studio.generate_button.click()
    result = studio.results[-1]
    assert result.seeds == [5, 6]
    assert result.settings["sampler"] == "Euler a" and result.settings["steps"] == 2
    assert result.settings["guidance_scale"] == 4.0 and result.settings["prompt"] == "a red boat"
    assert len(studio.gallery.children) == 2
    assert studio.gallery.children[0].value[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["studio-5.png", "studio-6.png"]
    assert "2 image(s)" in studio.status.value and not studio.generate_button.disabled
    studio.generate_button.click()  # newest first, old ones kept
    assert len(studio.gallery.children) == 4


def test_randomise_sets_a_new_seed(engine):
    studio = Studio(engine, generate=mock.Mock())
    seeds = {studio.randomise() for _ in range(5)}
    assert len(seeds) > 1 and studio.seed.value in seeds and all(0 <= s < 2**32 for s in seeds)
    before = studio.seed.value
    studio.randomise_button.click()
    assert studio.seed.value != before  # a 1 in 4 billion chance of a false failure


def test_bad_settings_show_in_the_status_without_model_work():
    pipe = mock.MagicMock()
    studio = Studio(Engine("tiny", pipe=pipe, say=lambda message: None))
    studio.width.value = 100  # BoundedIntText keeps it (within 64..256); not a multiple of 8
    studio.generate_button.click()
    assert "width=100" in studio.status.value and "multiple of 8" in studio.status.value
    assert studio.results == [] and pipe.mock_calls == [] and not studio.generate_button.disabled


def test_panel_holds_every_control(engine):
    studio = Studio(engine, generate=mock.Mock())
    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)
    inside = set(map(id, walk(studio.panel)))
    for control in (studio.prompt, studio.negative_prompt, studio.sampler, studio.steps, studio.guidance_scale,
                    studio.seed, studio.randomise_button, studio.width, studio.height, studio.num_images,
                    studio.generate_button, studio.gallery):
        assert id(control) in inside


def test_tiny_defaults_are_the_lab_prompts_without_a_negative_prompt():
    studio = Studio(Engine("tiny", pipe=mock.MagicMock(), say=lambda message: None), generate=mock.Mock())
    assert studio.prompt.value == "a red circle on a white background"
    assert studio.negative_prompt.value == ""  # "blurry, lowres" greys the lab model's white background
    from nbhelpers.lab import shapes

    assert all(shapes.parse_caption(text) for text in studio.examples.options)  # prompts the lab model knows
    studio.examples.value = studio.examples.options[2]
    assert studio.prompt.value == studio.examples.options[2]


def test_lora_scale_slider_redraws_without_an_output_widget(monkeypatch):
    import ipywidgets
    from PIL import Image

    from nbhelpers.train import views

    drawn = []
    def fake_draw(pipe, prompts, seed=0, scale=None, **settings):
        drawn.append(scale)
        return [Image.new("RGB", (64, 64), (int(200 * scale), 0, 0))]
    monkeypatch.setattr(views, "draw", fake_draw)
    panel = views.scale_slider(object(), "a red circle on a white background")
    slider, picture = panel.children
    assert isinstance(slider, ipywidgets.FloatSlider) and isinstance(picture, ipywidgets.Image)
    assert not any(isinstance(child, ipywidgets.Output) for child in panel.children)
    first = picture.value
    slider.value = 0.0
    assert drawn == [1.0, 0.0] and picture.value != first and picture.value[:4] == b"\x89PNG"
