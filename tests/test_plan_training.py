"""The planner's training peak (nbhelpers.plan.training): activations counted on the meta-device UNet, the parts of
a training step, and fit/no-fit verdicts for the t4 profile's SDXL settings at 15 GiB. All sizes in GiB."""

import json
from dataclasses import replace

import pytest

from nbhelpers import cli
from nbhelpers.plan import training
from nbhelpers.plan.training import TrainSettings, saved_activations, training_peak

SMALL = TrainSettings(resolution=128, batch_size=1, rank=4, gradient_checkpointing=True, use_8bit_adam=True)


def test_counted_activations_grow_with_the_pixels_and_checkpointing_keeps_few():
    small, large = saved_activations("tiny-sdxl", 128, 1), saved_activations("tiny-sdxl", 256, 1)
    # every saved tensor is per latent pixel except the 77-token cross-attention keys and values: 4x the pixels
    assert 3.6 < large["total"] / small["total"] <= 4.0
    assert small["checkpointed"] + small["largest_block"] < small["total"] / 2
    assert saved_activations("tiny-sdxl", 128, 2)["total"] == pytest.approx(2 * small["total"], rel=0.01)


def test_the_peak_moves_the_way_each_setting_should_move_it():
    def step(settings, mode="lora"):
        return training_peak("tiny-sdxl", mode, settings)["phases"]["training"]

    assert step(replace(SMALL, resolution=256)) > step(SMALL)
    assert step(replace(SMALL, batch_size=2)) > step(SMALL)
    assert step(replace(SMALL, gradient_checkpointing=False)) > step(SMALL)
    assert step(SMALL, "dreambooth") > step(SMALL)  # prior preservation: a class example beside each instance
    assert step(replace(SMALL, train_text_encoder=True)) > step(SMALL)  # both encoders stay on the GPU


def test_adam_states_cost_what_they_should():
    full = training_peak("tiny-sd", "dreambooth-full", replace(SMALL, use_8bit_adam=False))
    eight_bit = training_peak("tiny-sd", "dreambooth-full", SMALL)
    params = full["trainable_parameters"]
    difference = full["parts"]["trainable_and_optimizer"] - eight_bit["parts"]["trainable_and_optimizer"]
    assert difference == 6 * params  # two fp32 states (8 bytes) vs two 8-bit ones (2 bytes)
    assert eight_bit["parts"]["unet_weights"] == 0  # a full fine-tune replaces the 16-bit UNet by an fp32 one


def test_the_lora_size_is_the_one_peft_adds():
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from nbhelpers import tiny

    unet = UNet2DConditionModel.from_pretrained(str(tiny.ensure("sdxl") / "unet"), use_safetensors=True)
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(training.LORA_TARGETS)))
    added = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    assert training.lora_parameters("tiny-sdxl", 4) == added
    assert training_peak("tiny-sdxl", "lora", SMALL)["trainable_parameters"] == added


def test_the_t4_sdxl_settings_fit_and_the_planner_says_what_would_not():
    lora = training.training_plan("sdxl", "t4", "lora")
    dreambooth = training.training_plan("sdxl", "t4", "dreambooth")
    for plan in (lora, dreambooth):
        assert plan["rows"][0]["settings"].startswith("1024 px, batch 1") and plan["fits"]
        assert plan["gpu_peak_gib"] < 0.95 * 15.0
    rows = {row["setting"]: row for row in lora["rows"]}
    assert rows["without gradient checkpointing"]["phases_gib"]["training"] > rows["as set"]["phases_gib"]["training"]
    assert rows["768 px"]["phases_gib"]["training"] < rows["as set"]["phases_gib"]["training"]
    # The DreamBooth peak is the class images (the whole pipeline generating), not the training step
    assert dreambooth["rows"][0]["peak_phase"] == "class_images"
    too_big = replace(training.profile_settings("sdxl", "t4"), gradient_checkpointing=False, batch_size=8)
    assert not training.training_plan("sdxl", "t4", "lora", too_big)["fits"]
    # SDXL's weights alone exceed a T4 in a full fine-tune with AdamW: 2.6B parameters x 16 bytes
    assert not training.training_plan("sdxl", "t4", "dreambooth-full",
                                      replace(too_big, batch_size=1, gradient_checkpointing=True,
                                              use_8bit_adam=False))["fits"]


def test_the_cli_plans_training(capsys):
    assert cli.main(["plan", "tiny-sdxl", "--train", "lora", "--width", "256"]) == 0
    out = capsys.readouterr().out
    assert "256 px" in out and "verdict: fits" in out and "GiB (2**30 bytes)" in out
    assert cli.main(["plan", "sd3-medium", "--train", "lora", "--json"]) == 2  # no UNet: nbhelpers.train cannot
    assert "a UNet model for training" in capsys.readouterr().err
    assert cli.main(["plan", "tiny-sd", "--train", "dreambooth", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "dreambooth"
