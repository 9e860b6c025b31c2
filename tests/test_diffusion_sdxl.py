"""The SDXL path of the prompt encoder (the `large` profile), on a randomly initialised miniature SDXL."""

import pytest


@pytest.fixture(scope="module")
def sdxl():
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nbhelpers import tiny

    torch.manual_seed(0)
    # SDXL conditions on both text encoders (32 + 32 = 64) and on a pooled vector plus six size numbers (32 + 6 x 8).
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, cross_attention_dim=64,
        norm_num_groups=16)
    vae = AutoencoderKL(block_out_channels=(16, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8,
                        layers_per_block=1, sample_size=64)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    tokenizer = tiny.clip_tokenizer()
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(config), tokenizer=tokenizer,
                                     text_encoder_2=CLIPTextModelWithProjection(config), tokenizer_2=tokenizer,
                                     unet=unet, scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False)
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
