"""The SDXL path of the prompt encoder (the `large` profile), on the randomly initialised miniature SDXL."""

import pytest


@pytest.fixture(scope="module")
def sdxl():
    """The miniature SDXL of nbhelpers.tiny (the trainer's `tiny:sdxl`): SDXL conditions on both text encoders
    (32 + 32 = 64) and on a pooled vector plus six size numbers (32 + 6 x 8)."""
    from diffusers import StableDiffusionXLPipeline

    from nbhelpers import tiny

    pipe = StableDiffusionXLPipeline(**tiny.sdxl_components(), force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sdxl_embeddings_have_both_encoders_and_pooled(sdxl):
    from nbhelpers.diffusion.prompts import PromptEncoder

    embeds = PromptEncoder(sdxl)("a (red:1.3) fox " + "in the snow " * 30, "blurry")
    assert embeds["prompt_embeds"].shape == (1, 154, 64)
    assert embeds["negative_prompt_embeds"].shape == (1, 154, 64)
    assert embeds["pooled_prompt_embeds"].shape == embeds["negative_pooled_prompt_embeds"].shape == (1, 32)


def test_sdxl_generates_through_the_engine(sdxl):
    from nbhelpers.diffusion import Engine

    engine = Engine("tiny", pipe=sdxl, say=lambda message: None)
    result = engine.txt2img("a fox", seed=3, num_images=2, steps=2, sampler="Euler a")
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
