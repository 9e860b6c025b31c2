"""Quality metrics: each behaves as its definition says, and the t4 path runs end to end on local stand-ins
(small networks built and saved here with save_pretrained; the Hub is never touched)."""

import pytest
import torch

from nbhelpers.bench import quality
from nbhelpers.checks import ParameterError
from nbhelpers.lab import features, shapes


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    return features.ShapeFeatures().eval().requires_grad_(False)


def drawings(n, seed, background=None):
    specs = shapes.sample(n, seed=seed, backgrounds=[background] if background else None)
    return [shapes.draw(s) for s in specs]


def test_fid_of_a_set_with_itself_is_zero_and_of_a_shifted_set_is_not(random_net):
    images = drawings(48, seed=1)
    darker = quality.pixels(images) * 0.5
    itself, shifted = quality.fid(images, images, random_net), quality.fid(images, darker, random_net)
    assert shifted > 0 and itself <= 1e-3 * shifted  # FID's scale is the features' (a random network here)


def test_kid_is_near_zero_within_a_distribution_and_positive_for_shifted_sets(random_net):
    white, white_again = drawings(40, seed=2, background="white"), drawings(40, seed=3, background="white")
    black = drawings(40, seed=4, background="black")
    same, _ = quality.kid(white, white_again, random_net)
    shifted, _ = quality.kid(white, black, random_net)
    assert shifted > 0 and shifted > 10 * abs(same)


def test_lab_lpips_is_zero_for_identical_images_and_grows_with_difference(random_net):
    lpips = quality.UnitLPIPS(random_net)
    images = drawings(4, seed=5)
    assert torch.allclose(lpips(images, images), torch.zeros(4), atol=1e-6)
    assert quality.diversity([images[:1] * 3], lpips) == pytest.approx(0.0, abs=1e-6)  # three identical seeds
    assert quality.diversity([images], lpips) > 0.01
    with pytest.raises(ParameterError):
        quality.diversity([images[:1]], lpips)  # one image has no pair


def test_fid_notes_say_when_there_are_too_few_images():
    assert "singular" in quality.fid_note(32, 2048)
    assert "biased" in quality.fid_note(64, 32) and quality.fid_note(400, 32) is None


def test_the_shipped_lab_network_reads_lab_pictures():
    """The lab judge reads colour and background of fresh drawings, and shape better than chance (1/6): the
    shipped network's figures, as its docstring states them."""
    from nbhelpers.lab import train_features

    net = features.load()
    scores = train_features.accuracy(net, *train_features.drawn(120, seed=99))
    assert scores["colour"] >= 0.95 and scores["background"] >= 0.95 and scores["shape"] > 0.25, scores


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A small CLIP (for CLIP score and PickScore) and a feature network, saved and reloaded like Hub models."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from nbhelpers import tiny

    folder = tmp_path_factory.mktemp("stand-ins")
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "vocab_size": 49408, "max_position_embeddings": 77},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tiny.clip_tokenizer()).save_pretrained(folder / "clip")
    features.ShapeFeatures(width=8, features=16).save_pretrained(folder / "features")
    return folder


def test_the_t4_path_computes_fid_kid_lpips_clip_and_preference_offline(stand_ins):
    net = features.ShapeFeatures.from_pretrained(str(stand_ins / "features")).eval()
    clip = str(stand_ins / "clip")
    judges = quality.hub_judges(features=net, lpips_net=quality.UnitLPIPS(net), clip=clip, preference=(clip, clip))
    reference, generated = drawings(24, seed=6), drawings(24, seed=7)
    prompts = [f"a photo number {i}" for i in range(24)]
    figures = quality.measure(judges, generated, reference, groups=[generated[:3], generated[3:6]], prompts=prompts)
    assert figures["fid"]["metric"] == "FID" and figures["fid"]["value"] > 0 and figures["fid"]["n_generated"] == 24
    assert "biased" in figures["fid"]["note"]  # 24 images, 16-d features
    assert figures["kid"]["metric"] == "KID" and figures["kid"]["subset_size"] == 12
    assert figures["lpips_diversity"]["value"] > 0
    assert 0 <= figures["clip_score"]["value"] <= 100 and figures["clip_score"]["model"] == clip
    # PickScore is logit_scale x cosine; the stand-in's logit scale is CLIP's initial 1/0.07
    assert abs(figures["preference"]["value"]) <= 1 / 0.07 + 1e-3


def test_the_default_gpu_judges_are_clip_in_safetensors(stand_ins):
    """No pickled weights by default: FID/KID features and LPIPS layers come from the CLIP model (safetensors)."""
    clip = str(stand_ins / "clip")
    judges = quality.hub_judges(clip=clip, preference=(clip, clip))
    assert "CLIP image embeddings" in judges.features_name and judges.feature_dims == 16
    reference, generated = drawings(12, seed=6), drawings(12, seed=7)
    figures = quality.measure(judges, generated, reference, groups=[generated[:3], generated[:1] * 3])
    assert figures["fid"]["value"] > 0 and "CLIP" in figures["fid"]["features"]
    identical = quality.diversity([generated[:1] * 3], judges.lpips)
    assert identical == pytest.approx(0.0, abs=1e-6) and figures["lpips_diversity"]["value"] > 0
    assert "unit weights" in figures["lpips_diversity"]["metric"]


def test_inception_fid_without_torch_fidelity_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch_fidelity" else real(name, *a))
    with pytest.raises(ParameterError) as error:
        quality.hub_judges(features=2048)
    assert "torch-fidelity" in str(error.value)
