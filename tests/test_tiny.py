import time

import pytest
import torch

from nbhelpers import loaders, tiny
from nbhelpers.profiles import ModelSpec, PROFILES, Profile


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, tiny.build_all(root)


def test_build_is_deterministic(built, tmp_path):
    root, folders = built
    again = tiny.ensure("mixtral", tmp_path)
    assert tiny.weight_digests(again) == tiny.weight_digests(folders["mixtral"])


def test_second_call_reuses_the_cache(built):
    root, folders = built
    before = {p: p.stat().st_mtime_ns for p in folders["sd"].rglob("*.safetensors")}
    start = time.perf_counter()
    assert tiny.ensure("sd", root) == folders["sd"]
    assert time.perf_counter() - start < 2
    assert {p: p.stat().st_mtime_ns for p in folders["sd"].rglob("*.safetensors")} == before


def test_damaged_cache_is_detected_and_rebuilt(built):
    root, folders = built
    weights = next(folders["mixtral"].rglob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # a download or build cut off halfway
    assert not tiny.is_valid(folders["mixtral"])
    tiny.ensure("mixtral", root)
    assert tiny.is_valid(folders["mixtral"]) and weights.read_bytes() == good


def _tiny_profile(root, folders) -> Profile:
    """The tiny profile, pointed at this test's own build (local folders go through the same loader as Hub ids)."""
    base = PROFILES["tiny"]
    models = {"chat": ModelSpec(str(folders["mixtral"])), "txt2img": ModelSpec(str(folders["sd"])),
              "inpaint": ModelSpec(str(folders["sd-inpaint"])), "train_base": ModelSpec(str(folders["sd"]))}
    return Profile("tiny", base.description, "cpu", models, base.defaults)


def test_mixtral_round_trip_and_chat_template(built):
    from transformers import MixtralForCausalLM

    root, folders = built
    model, tokenizer = loaders.load_chat(_tiny_profile(root, folders))
    assert isinstance(model, MixtralForCausalLM)
    assert (model.config.num_local_experts, model.config.num_experts_per_tok) == (8, 2)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut"},
                                          {"role": "user", "content": "Ça va ?"}], tokenize=False)
    assert text == "<s>[INST] Bonjour [/INST]Salut</s>[INST] Ça va ? [/INST]"
    ids = tokenizer("Ça va ?")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Ça va ?"
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == len(ids) + 4


def test_sd_round_trip_same_seed_same_image(built):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    root, folders = built
    profile = _tiny_profile(root, folders)
    pipe = loaders.load_diffusion(profile, "txt2img")
    assert isinstance(pipe, StableDiffusionPipeline) and pipe.tokenizer.model_max_length == 77
    assert pipe.tokenizer("a red circle").input_ids == [49406, 320, 736, 7117, 49407]  # OpenAI CLIP's ids
    images = [pipe("a red circle", num_inference_steps=3, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(7)).images for _ in range(2)]
    assert images[0].shape == (1, 64, 64, 3) and (images[0] == images[1]).all()
    inpaint = loaders.load_diffusion(profile, "inpaint")
    assert isinstance(inpaint, StableDiffusionInpaintPipeline) and inpaint.unet.config.in_channels == 9
