"""The dress rehearsal's pieces (the whole rehearsal is .ci/rehearsal: minutes, not a unit test)."""

import dataclasses
import json

import pytest

from nbhelpers import checks, rehearsal, runner
from nbhelpers.moe import load_config
from nbhelpers.profiles import PROFILES, get_profile
from nbhelpers.rehearsal import checkpoints, sources
from nbhelpers.rehearsal.settings import OVERRIDES


def hub_models():
    return sorted({spec.source for profile in PROFILES.values() for spec in profile.models.values()
                   if not spec.is_offline} | {"mistralai/Mixtral-8x7B-Instruct-v0.1"})


@pytest.mark.parametrize("model_id", hub_models())
def test_every_profile_model_has_a_shipped_architecture(model_id):
    spec = sources.source(model_id)
    if spec.kind == "llm":
        config = load_config(spec.config)
        assert config.num_hidden_layers > sources.LLM_LAYERS  # the cut is a cut
    else:
        from nbhelpers.plan import configs

        assert "unet" in configs.component_classes(spec.config)


def test_a_model_without_a_shipped_architecture_is_named():
    with pytest.raises(checks.ParameterError, match="model"):
        sources.source("someone/unknown-model")


@pytest.mark.parametrize("name", ["t4", "large"])
def test_profile_context_fits_the_chat_model(name):
    """The needle test needs context_tokens plus its 16 answer tokens within the model's positions (OLMoE: 4096)."""
    profile = PROFILES[name]
    config = load_config(profile.model("chat").source)
    assert profile.default("chat", "context_tokens") + 16 <= config.max_position_embeddings


def test_inpainting_configs_have_nine_channel_unets():
    from nbhelpers.plan import configs

    for name in ("sd15-inpainting", "sdxl-inpainting"):
        assert configs.component_config(name, "unet")["in_channels"] == 9


def test_get_profile_gives_rehearsal_sizes_only_when_enabled(monkeypatch):
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    assert get_profile("t4").default("txt2img", "steps") == PROFILES["t4"].default("txt2img", "steps")
    monkeypatch.setenv(rehearsal.ENV, "1")
    t4 = get_profile("t4")
    assert t4.default("txt2img", "steps") == OVERRIDES["txt2img"]["steps"]
    assert t4.models == PROFILES["t4"].models  # the same models: only sizes change
    assert t4.default("train", "use_8bit_adam") is True  # what the rehearsal checks stays as the profile has it
    assert get_profile("tiny") is PROFILES["tiny"]


def test_random_weights_refused_for_tiny(tmp_path):
    with pytest.raises(checks.ParameterError, match="--random-weights"):
        runner.run(["00"], profile="tiny", out=tmp_path, random_weights=True)


def test_random_checkpoint_loads_with_from_pretrained(tmp_path, monkeypatch):
    """Sharded like the Hub (index + shards), norms 1, biases 0, other weights at 1/sqrt(fan_in)."""
    import torch
    from transformers import AutoModelForCausalLM, MixtralConfig

    monkeypatch.setattr(checkpoints, "SHARD_BYTES", 20_000)
    config = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    config.save_pretrained(tmp_path)
    written = checkpoints.write_random_state(meta, tmp_path, "float32")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert written == sum(p.numel() * 4 for p in meta.parameters())
    model = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    assert torch.equal(model.model.norm.weight, torch.ones(32))
    std = model.model.layers[0].self_attn.q_proj.weight.std().item()
    assert abs(std - 32 ** -0.5) < 0.05
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_stand_in_tokenizer_covers_the_model_vocabulary_with_visible_noise():
    """A random model's ids span the real vocabulary; each must decode to visible, labelled text, while the
    stand-in encodes prompts exactly as before (the chat template and its ids do not change)."""
    from nbhelpers import tiny

    stand_in = tiny.stand_in_tokenizer()
    padded = checkpoints.noise_padded(stand_in, 32000)
    assert len(padded) == 32000
    assert padded.decode([31999, 12345]) == " noise31999 noise12345"
    message = [{"role": "user", "content": "Which experts does the router pick?"}]
    assert (padded.apply_chat_template(message, add_generation_prompt=True)
            == stand_in.apply_chat_template(message, add_generation_prompt=True))
    assert padded.eos_token_id == stand_in.eos_token_id == 2


def test_a_checkpoint_with_an_older_stand_in_gets_the_current_one(tmp_path):
    """Checkpoints cost minutes to build; an older one keeps its weights and gets the padded stand-in, and a 01b
    conversion reused from it copies the new tokenizer files (and never its config)."""
    from nbhelpers.moe.offload import lesson

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "granitemoe", "vocab_size": 1000,
                                                       "max_position_embeddings": 4096}))
    (tmp_path / "rehearsal.json").write_text(json.dumps({"tokenizer": "a 512-token stand-in", "parameters": 7}))
    checkpoints._refresh_stand_in(tmp_path)
    notes = json.loads((tmp_path / "rehearsal.json").read_text())
    assert notes == {"tokenizer": checkpoints.STAND_IN_TOKENIZER, "parameters": 7}
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]["\u0120noise999"] == 999
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / "tokenizer.json").write_text("{}")
    (converted / "config.json").write_text('{"written": "for the converted weights"}')
    lesson._refresh_side_files(tmp_path, converted)
    assert (converted / "tokenizer.json").read_text() == (tmp_path / "tokenizer.json").read_text()
    assert json.loads((converted / "config.json").read_text()) == {"written": "for the converted weights"}


def test_stage_memory_keeps_the_higher_figures():
    from nbhelpers.rehearsal.memory import stage_memory

    now = stage_memory()
    assert now["peak_rss_gib"] >= now["rss_gib"] > 0
    assert stage_memory({"rss_gib": 1e6, "peak_rss_gib": 1e6}) == {"rss_gib": 1e6, "peak_rss_gib": 1e6}


@pytest.fixture
def rehearsal_env(monkeypatch):
    """The CLI switches the rehearsal on for its process: put the variables back afterwards."""
    monkeypatch.setenv(rehearsal.ENV, "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_train_random_weights_trains_the_profile_path_on_a_stand_in(tmp_path, monkeypatch, rehearsal_env):
    """`nbhelpers train --profile t4 --random-weights`: t4's settings (LoRA rank 4, gradient checkpointing,
    cached latents) at the rehearsal's size, on the folder the rehearsal resolves the Hub id to. Toy size here: the
    lab SD stands in for the random SD 1.5 checkpoint (which .ci/rehearsal builds: 4 GB)."""
    from nbhelpers import cli
    from nbhelpers.paths import data_dir
    from nbhelpers.train import shipped_data

    asked = []

    def stand_in(model_id):
        asked.append(model_id)
        return data_dir() / "lab" / "sd"

    monkeypatch.setattr(checkpoints, "folder_for", stand_in)
    output = tmp_path / "run"
    code = cli.main(["train", "lora", "--profile", "t4", "--random-weights", "--data", str(shipped_data("lora")),
                     "--output", str(output), "--no-progress"])
    assert code == 0
    assert asked == [PROFILES["t4"].model("train_base").source]
    record = json.loads((output / "run.json").read_text())
    assert record["settings"]["random_weights"] is True
    assert record["settings"]["steps"] == OVERRIDES["train"]["steps"]
    assert record["settings"]["rank"] == PROFILES["t4"].default("train", "rank")
    assert record["settings"]["gradient_checkpointing"] is True
    assert rehearsal.NOISE in (output / "README.md").read_text()


def test_a_rehearsal_run_never_shares_a_real_runs_fingerprint(monkeypatch):
    from nbhelpers.train import TrainConfig

    config = TrainConfig(mode="lora", data="d", output="o", profile="t4")
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    real = config.resolved()
    monkeypatch.setenv(rehearsal.ENV, "1")
    rehearsed = dataclasses.replace(config.resolved(), steps=real.steps, resolution=real.resolution,
                                    warmup_steps=real.warmup_steps, num_class_images=real.num_class_images,
                                    class_image_steps=real.class_image_steps, validation_every=real.validation_every,
                                    checkpoint_every=real.checkpoint_every)
    assert not real.random_weights and rehearsed.random_weights
    assert rehearsed.fingerprint() != real.fingerprint()  # the same settings otherwise


def test_train_random_weights_refused_for_tiny(rehearsal_env, capsys):
    from nbhelpers import cli

    assert cli.main(["train", "lora", "--profile", "tiny", "--random-weights", "--data", "x", "--output", "y"]) != 0
    assert "--random-weights" in capsys.readouterr().err


def test_bench_random_weights_maps_hub_models_to_their_random_twins():
    from nbhelpers.bench import models

    assert models.with_random_weights(["sd15", "random:sdxl", "tiny"]) == ["random:sd15", "random:sdxl", "tiny"]
    with pytest.raises(checks.ParameterError, match="--random-weights"):
        models.with_random_weights(["flux1-schnell"])


def test_bench_random_weights_times_a_random_architecture(tmp_path, capsys):
    from nbhelpers import cli

    code = cli.main(["bench", "--models", "tiny-sd", "--random-weights", "--steps", "2", "--repeats", "1",
                     "--warmup", "0", "--resolutions", "64", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    rows = (tmp_path / "results.csv").read_text()
    assert "random:tiny-sd" in rows and "RANDOM weights" in rows
    assert "speed and memory only" in capsys.readouterr().out


def test_rehearsal_pictures_and_plots_say_they_are_noise(monkeypatch):
    from matplotlib.figure import Figure
    from PIL import Image

    from nbhelpers.diffusion.grids import make_grid

    picture = Image.new("RGB", (64, 64), "blue")
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    plain = make_grid([[picture, picture]])
    assert rehearsal.label_image(picture) is picture
    assert not rehearsal.label_figure(Figure()).texts
    monkeypatch.setenv(rehearsal.ENV, "1")
    labelled = make_grid([[picture, picture]])
    assert labelled.height > plain.height and labelled.getpixel((labelled.width // 2, 2)) == (255, 255, 255)
    assert any(pixel[0] > 150 and pixel[1] < 60 for pixel in labelled.crop((0, 0, 120, 14)).getdata())  # red text
    assert [text.get_text() for text in rehearsal.label_figure(Figure()).texts] == [rehearsal.NOISE]


def test_01b_answers_briefly_in_a_rehearsal(monkeypatch):
    """01b's offload defaults are profile defaults: the rehearsal's shortest generation reaches them too."""
    from nbhelpers.profiles import PROFILES, get_profile

    monkeypatch.delenv(rehearsal.ENV, raising=False)
    real = PROFILES["t4"].defaults["offload"]
    assert get_profile("t4").resolve("offload", max_new_tokens=None)["max_new_tokens"] == real["max_new_tokens"]
    monkeypatch.setenv(rehearsal.ENV, "1")
    assert get_profile("t4").resolve("offload", max_new_tokens=None, cache_size=None) == {
        "max_new_tokens": OVERRIDES["offload"]["max_new_tokens"], "cache_size": real["cache_size"]}
    tiny = PROFILES["tiny"].defaults["offload"]["max_new_tokens"]
    assert get_profile("tiny").resolve("offload", max_new_tokens=None)["max_new_tokens"] == tiny


def test_training_pictures_are_drawn_at_the_rehearsal_size(monkeypatch):
    """04 and 05 draw through views.draw without a size: SD 1.5's native 512 px and 25 steps on a GPU, the
    rehearsal's 64 px and fewest steps in a rehearsal (13 pictures at 512 px in 04, 32 in 05)."""
    from types import SimpleNamespace

    from nbhelpers.train import views

    sd15 = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(sample_size=64)), vae_scale_factor=8)
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    assert views.draw_size_and_steps(sd15) == (512, 25)
    assert views.draw_size_and_steps(sd15, 96) == (96, 10)
    monkeypatch.setenv(rehearsal.ENV, "1")
    assert views.draw_size_and_steps(sd15) == (OVERRIDES["txt2img"]["width"], OVERRIDES["txt2img"]["steps"])
    assert views.draw_size_and_steps(sd15, 128, 3) == (128, 3)  # what a caller asks for stays


@pytest.mark.parametrize("name", ["t4", "large"])
def test_rehearsal_server_has_a_fixed_kv_cache_and_short_replies(name, monkeypatch):
    """Left to itself, transformers sizes the continuous-batching KV cache from free memory: 60% of the machine's
    RAM on a CPU. A rehearsal gives it a fixed size, and 09's replies the rehearsal's short length."""
    from nbhelpers import loaders
    from nbhelpers.serve import transformers_engine

    monkeypatch.setattr(loaders, "resolve_source", lambda spec: "/models/" + spec.source)
    monkeypatch.setenv(rehearsal.ENV, "1")
    profile = get_profile(name)
    argv = transformers_engine.command(profile)
    assert argv[argv.index("--cb-num-blocks") + 1] == str(OVERRIDES["serve"]["cb_num_blocks"])
    assert argv[argv.index("--device") + 1] == "cpu"
    assert profile.default("serve", "max_tokens") == OVERRIDES["serve"]["max_tokens"] < 16


def test_06_rehearsal_grid_and_training_rows_are_the_smallest(monkeypatch):
    """06 under t4 benchmarks every model that fits at 512 px, 20 steps, 3 repeats, with Hub weights; a rehearsal
    runs the random twins that build offline, at 64 px, the fewest steps, once, and trains each row 2 steps."""
    from nbhelpers.bench import notebook, training

    monkeypatch.setenv(rehearsal.ENV, "1")
    grid = notebook.grid_for("t4", "t4")
    assert grid.models == ["random:sd15", "random:sdxl"] and grid.resolutions == [OVERRIDES["txt2img"]["width"]]
    assert grid.steps == [OVERRIDES["txt2img"]["steps"]] and grid.repeats == 1 and grid.warmup == 0
    assert training.default_steps("t4") == OVERRIDES["train"]["steps"]
    monkeypatch.delenv(rehearsal.ENV)
    assert training.default_steps("t4") == training.STEPS["t4"]
    assert "sd15" in notebook.grid_for("t4", "t4").models


@pytest.mark.parametrize("model_id, published", [("openai/clip-vit-base-patch16", 149_620_737),
                                                 ("yuvalkirstain/PickScore_v1", 986_109_441)])
def test_quality_judges_have_their_real_architecture(model_id, published, tmp_path, monkeypatch):
    """06's judges in a rehearsal: CLIP ViT-B/16 and PickScore (CLIP ViT-H-14) at their published sizes, with
    CLIP's logit scale at its initial 1/0.07 (a 0-d weight the random initialiser must not treat as a matrix)."""
    import math

    import torch
    from transformers import CLIPModel

    spec = sources.source(model_id)
    assert spec.kind == "clip"
    written = {}
    monkeypatch.setattr(checkpoints, "write_random_state",
                        lambda model, folder, dtype: written.setdefault("n", sum(p.numel() for p in model.parameters())))
    notes = checkpoints._build_clip(spec, tmp_path)
    assert notes["parameters"] == written["n"] == published
    assert CLIPModel.config_class.from_pretrained(tmp_path).vision_config.image_size == 224
    scale = checkpoints._init("logit_scale", (), torch.float32, torch.Generator())
    assert scale.shape == () and scale.item() == pytest.approx(math.log(1 / 0.07))


def test_08_grades_short_replies_in_a_rehearsal(monkeypatch):
    """08 scores every model five times; in a rehearsal each graded reply is the rehearsal's shortest generation."""
    from nbhelpers.lab import tasks

    asked = []
    monkeypatch.setattr(tasks, "reply", lambda model, tokenizer, message, max_new_tokens: asked.append(max_new_tokens) or "")
    from nbhelpers import tiny

    items = tasks.held_out_set(tiny.stand_in_tokenizer(), per_task=1, seed=3)
    monkeypatch.delenv(rehearsal.ENV, raising=False)
    tasks.score(None, None, items)
    assert max(asked) == 64 and min(asked) == 32
    asked.clear()
    monkeypatch.setenv(rehearsal.ENV, "1")
    tasks.score(None, None, items)
    assert set(asked) == {OVERRIDES["chat"]["max_new_tokens"]}
