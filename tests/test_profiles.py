import pytest

from nbhelpers import profiles
from nbhelpers.checks import ParameterError


def test_auto_picks_from_the_hardware():
    assert profiles.auto_profile_name(None) == "tiny"
    assert profiles.auto_profile_name({"total_gb": 14.7}) == "t4"
    assert profiles.auto_profile_name({"total_gb": 79.2}) == "large"


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ParameterError, match=r"profile='gpu' is not allowed: choose one of 'tiny', 't4'"):
        profiles.get_profile("gpu")


def test_every_profile_covers_every_task_with_the_same_default_names():
    tiny = profiles.PROFILES["tiny"]
    for profile in profiles.PROFILES.values():
        assert set(profile.models) == set(profiles.TASKS)
        assert {task: set(d) for task, d in profile.defaults.items()} == {task: set(d) for task, d in tiny.defaults.items()}


def test_tiny_is_offline_and_t4_uses_real_hub_models_in_fp16():
    tiny, t4 = profiles.get_profile("tiny"), profiles.get_profile("t4")
    assert all(spec.is_offline for spec in tiny.models.values())
    assert tiny.device == "cpu"
    assert t4.model("txt2img").source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert t4.model("inpaint").source == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert {spec.dtype for spec in t4.models.values()} == {"float16"}  # a T4 has no bf16


def test_resolve_fills_only_missing_values():
    t4 = profiles.get_profile("t4")
    assert t4.resolve("txt2img", steps=None, width=640) == {"steps": 25, "width": 640}
    with pytest.raises(ParameterError, match="task='video'"):
        t4.model("video")
