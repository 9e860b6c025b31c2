"""Generation mechanics on the tiny pipeline (random weights: pictures are noise, the mechanics are real)."""

from unittest import mock

import numpy as np
import pytest
from PIL import Image

from nbhelpers import loaders
from nbhelpers.checks import ParameterError
from nbhelpers.diffusion import Engine, denoising_steps, masks, memory, samplers

FAST = {"steps": 3}


@pytest.fixture(scope="module")
def engine(random_tiny):
    return Engine(random_tiny, say=lambda message: None)


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_pixels_and_other_seed_other_pixels(engine):
    a = engine.txt2img("a lighthouse", seed=11, num_images=1, **FAST).images[0]
    b = engine.txt2img("a lighthouse", seed=11, num_images=1, **FAST).images[0]
    c = engine.txt2img("a lighthouse", seed=12, num_images=1, **FAST).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).mean() > 5


@pytest.mark.parametrize("sampler", ["DPM++ 2M Karras", "Euler a"])  # deterministic and ancestral (noise per step)
def test_batch_equals_single_runs(engine, sampler):
    batch = engine.txt2img("a lighthouse", seed=20, num_images=3, sampler=sampler, **FAST)
    assert batch.seeds == [20, 21, 22]
    for image, seed in zip(batch.images, batch.seeds):
        single = engine.txt2img("a lighthouse", seed=seed, num_images=1, sampler=sampler, **FAST).images[0]
        # Same starting noise and same per-step noise; batched float arithmetic may round a pixel by one level.
        assert np.abs(pixels(image) - pixels(single)).max() <= 2
        assert np.abs(pixels(image) - pixels(single)).mean() < 0.1


@pytest.mark.parametrize("name", samplers.available())
def test_every_sampler_runs_and_keeps_the_weights(engine, name):
    unet = engine.pipeline().unet
    result = engine.txt2img("a cat", sampler=name, seed=1, num_images=1, steps=2)
    assert result.images[0].size == (64, 64)
    assert samplers.current(engine.pipeline()) == name
    assert engine.pipeline().unet is unet


def test_sampler_options_do_not_leak_between_samplers(engine):
    pipe = engine.pipeline()
    samplers.use(pipe, "DPM++ 2M Karras")
    samplers.use(pipe, "Euler")
    assert not pipe.scheduler.config.get("use_karras_sigmas", False)


def test_img2img_and_inpainting_share_the_loaded_weights(engine):
    unet = engine.pipeline("txt2img").unet
    assert engine.pipeline("img2img").unet is unet
    assert engine.pipeline("blend").unet is unet
    assert engine.pipeline("inpaint").unet.config.in_channels == 9


def test_denoising_steps_is_int_of_steps_times_strength():
    assert [denoising_steps(10, s) for s in (0, 0.05, 0.1, 0.35, 0.75, 1.0)] == [0, 0, 1, 3, 7, 10]


@pytest.mark.parametrize("strength", [0.0, 0.05])  # 0.05 x 10 steps also rounds down to 0 denoising steps
def test_strength_zero_returns_the_input(engine, picture, strength):
    result = engine.img2img(picture, "a house", strength=strength, steps=10, seed=3, num_images=2)
    assert result.settings["denoising_steps"] == 0
    assert all(np.array_equal(pixels(image), pixels(picture)) for image in result.images)


def test_strength_above_zero_changes_the_picture(engine, picture):
    result = engine.img2img(picture, "a house", strength=0.6, steps=5, seed=3, num_images=1)
    assert result.settings["denoising_steps"] == 3
    assert np.abs(pixels(result.images[0]) - pixels(picture)).mean() > 5


@pytest.mark.parametrize("model", ["inpaint", "blend"])
def test_unmasked_pixels_are_unchanged_after_inpainting(engine, picture, model):
    mask = masks.shape(picture.size, (16, 8, 48, 40), "ellipse")
    result = engine.inpaint(picture, mask, "a tree", model=model, mask_blur=3, seed=5, num_images=2, **FAST)
    keep = np.asarray(masks.blur(mask, 3)) == 0
    repaint = np.asarray(mask) == 255
    for image in result.images:
        assert np.array_equal(pixels(image)[keep], pixels(picture)[keep])
        assert np.abs(pixels(image)[repaint] - pixels(picture)[repaint]).mean() > 5


def test_inpainting_with_padding_mask_crop_and_outpainting(engine, picture):
    mask = masks.shape(picture.size, (24, 24, 40, 40))
    cropped = engine.inpaint(picture, mask, "a window", model="blend", padding_mask_crop=8, seed=1, num_images=1,
                             **FAST)
    keep = np.asarray(masks.blur(mask, 2)) == 0
    assert np.array_equal(pixels(cropped.images[0])[keep], pixels(picture)[keep])
    canvas, border = masks.outpaint_canvas(picture, left=16, right=16)
    wide = engine.inpaint(canvas, border, "a meadow", seed=1, num_images=1, mask_blur=0, **FAST)
    assert wide.images[0].size == (96, 64)
    assert np.array_equal(pixels(wide.images[0])[:, 16:80], pixels(picture))


# -- bad input: a ParameterError naming the parameter, and no model work at all ------------------------------------

@pytest.fixture
def spy(monkeypatch):
    """An engine whose pipelines are mocks, with loading forbidden: any model work would show up."""
    load = mock.Mock(side_effect=AssertionError("a model was loaded"))
    monkeypatch.setattr(loaders, "load_diffusion", load)
    pipe, inpaint_pipe = mock.MagicMock(), mock.MagicMock()
    engine = Engine("tiny", pipe=pipe, inpaint_pipe=inpaint_pipe, say=lambda message: None)
    yield engine
    assert pipe.mock_calls == [] and inpaint_pipe.mock_calls == [] and load.call_count == 0


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("not an image")
    return path


BAD_TXT2IMG = [
    ("width", {"width": 63}), ("width", {"width": 1024}), ("height", {"height": 100}), ("height", {"height": 0}),
    ("steps", {"steps": 0}), ("guidance_scale", {"guidance_scale": -1.0}), ("sampler", {"sampler": "Euler b"}),
    ("num_images", {"num_images": 0}), ("seed", {"seed": -5}),
]


@pytest.mark.parametrize("name, bad", BAD_TXT2IMG, ids=[f"{n}={v}" for n, b in BAD_TXT2IMG for v in b.values()])
def test_bad_txt2img_settings_fail_before_model_work(spy, name, bad):
    with pytest.raises(ParameterError) as error:
        spy.txt2img("a cat", **bad)
    assert error.value.name == name
    assert "allowed" in str(error.value)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_bad_strength_fails_before_model_work(spy, picture, strength):
    for call in (lambda: spy.img2img(picture, "a cat", strength=strength),
                 lambda: spy.inpaint(picture, masks.shape(picture.size, (0, 0, 8, 8)), "a cat", strength=strength)):
        with pytest.raises(ParameterError) as error:
            call()
        assert error.value.name == "strength"


def test_mask_of_another_size_fails_before_model_work(spy, picture):
    with pytest.raises(ParameterError) as error:
        spy.inpaint(picture, Image.new("L", (32, 32), 255), "a cat")
    assert error.value.name == "mask" and "64x64" in str(error.value)


def test_unreadable_or_missing_image_file_fails_before_model_work(spy, bad_file, picture):
    for call in (lambda: spy.img2img(bad_file, "a cat"), lambda: spy.img2img(bad_file.parent / "none.png", "a cat"),
                 lambda: spy.inpaint(bad_file, picture, "a cat")):
        with pytest.raises(ParameterError) as error:
            call()
        assert error.value.name == "input_image"
    with pytest.raises(ParameterError) as error:
        spy.inpaint(picture, bad_file, "a cat")
    assert error.value.name == "mask"


def test_input_image_of_a_bad_size_fails_before_model_work(spy):
    with pytest.raises(ParameterError, match="fit") as error:
        spy.img2img(Image.new("RGB", (60, 64)), "a cat")
    assert error.value.name == "input_image"


def test_strength_zero_does_no_model_work(spy, picture):
    assert spy.img2img(picture, "a cat", strength=0.0).images[0].tobytes() == picture.tobytes()


# -- out of memory --------------------------------------------------------------------------------------------------

def test_out_of_memory_halves_the_batch_and_keeps_the_seeds():
    import torch

    calls, told = [], []

    def run_batch(seeds):
        calls.append(list(seeds))
        if len(seeds) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"image {seed}" for seed in seeds]

    images, changes = memory.run_in_batches(run_batch, [7, 8, 9, 10], pipe=None, say=told.append)
    assert images == ["image 7", "image 8", "image 9", "image 10"]
    assert calls[0] == [7, 8, 9, 10] and calls[-1] == [10]
    assert changes == ["batch size 4 -> 2 (same images: one seed per image)",
                       "batch size 2 -> 1 (same images: one seed per image)"]
    assert len(told) == 2 and "batch size 4 -> 2" in told[0]


def test_out_of_memory_then_vae_tiling_then_a_clear_error():
    pipe = mock.MagicMock()

    def always_out_of_memory(seeds):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(MemoryError, match="vae tiling"):
        memory.run_in_batches(always_out_of_memory, [1], pipe, say=lambda message: None)
    pipe.vae.enable_tiling.assert_called_once()


def test_other_errors_are_not_swallowed():
    def broken(seeds):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        memory.run_in_batches(broken, [1, 2], pipe=None, say=lambda message: None)
