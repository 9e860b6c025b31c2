"""The shipped lab Stable Diffusion draws what the prompt asks (CI never retrains: it loads data/lab/sd)."""

import pytest
import torch

from nbhelpers.lab import checker, shapes
from nbhelpers.paths import data_dir

LAB = data_dir() / "lab"
# Every colour and every shape twice, all three backgrounds, pairs seen in training.
PROMPTS = [("red", "circle", "white"), ("green", "square", "black"), ("blue", "triangle", "gray"),
           ("yellow", "star", "white"), ("purple", "cross", "black"), ("orange", "diamond", "gray"),
           ("red", "square", "black"), ("green", "star", "gray"), ("blue", "diamond", "white"),
           ("yellow", "circle", "gray"), ("purple", "triangle", "white"), ("orange", "cross", "black")]


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(LAB / "sd", use_safetensors=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_lab_sd_is_the_real_pipeline_architecture(pipe):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and len(pipe.tokenizer) == 49408
    assert pipe.unet.dtype == torch.float32


def test_lab_sd_draws_the_prompted_shape_and_colour(pipe):
    specs = [shapes.ShapeSpec(*p) for p in PROMPTS]
    generators = [torch.Generator().manual_seed(i) for i in range(len(specs))]
    images = pipe([shapes.caption(s) for s in specs], num_inference_steps=20, guidance_scale=4.0,
                  generator=generators).images
    accuracy = checker.score(images, specs)["accuracy"]
    assert images[0].size == (64, 64)
    assert accuracy["colour"] >= 0.8 and accuracy["shape"] >= 0.6 and accuracy["background"] >= 0.8, accuracy


def test_lab_weights_fit_the_budget_and_have_model_cards():
    files = [p for p in LAB.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files if p.suffix == ".safetensors") <= 40e6  # all lab weights: 40 MB
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    for name in ("sd", "mixtral", "mixtral-sft", "mixtral-instruct"):
        assert (LAB / name / "MODEL_CARD.md").is_file()
