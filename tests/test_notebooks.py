"""Every notebook: hygiene (what gets committed) and a real papermill run under `tiny`, offline."""

import ast
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from nbhelpers import REPO, runner
from nbhelpers.profiles import PROFILES

NOTEBOOKS = runner.available()
NAMES = list(NOTEBOOKS)
REQUIRED_NOTEBOOKS = ["00_setup"]


def _cells(name):
    return json.loads(NOTEBOOKS[name].read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_curriculum_notebooks_exist():
    assert set(REQUIRED_NOTEBOOKS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_valid_and_stripped(name):
    nbformat.validate(nbformat.read(NOTEBOOKS[name], as_version=4))
    for cell in _cells(name):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "commit notebooks stripped"


@pytest.mark.parametrize("name", NAMES)
def test_one_parameters_cell_with_the_shared_parameters(name):
    tagged = [c for c in _cells(name) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assigned = {}
    for node in ast.parse(_source(tagged[0])).body:
        if isinstance(node, ast.Assign):
            assigned[node.targets[0].id] = ast.literal_eval(node.value)
    assert assigned["profile"] == "auto" and assigned["seed"] == 0 and assigned["output_dir"] == ""


@pytest.mark.parametrize("name", NAMES)
def test_badge_install_cell_and_summary(name):
    cells = _cells(name)
    badge = f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb"
    assert cells[0]["cell_type"] == "markdown" and badge in _source(cells[0])
    install = _source(cells[1])
    assert "google.colab" in install and "KAGGLE_KERNEL_RUN_TYPE" in install and "pip" in install
    code = "\n".join(_source(c) for c in cells if c["cell_type"] == "code")
    assert not re.search(r"pip[^\n]*install[^\n]*\btorch\b", code), "never reinstall torch"
    assert "trust_remote_code=True" not in code
    assert not re.search(r"\bhf_[A-Za-z0-9]{30,}\b", code), "no tokens in notebooks"
    assert f'nbhelpers.start("{name}"' in code and "run.finish(" in _source(cells[-1])


FAKE_TOKEN = "hf_" + "FAKEtokenForLeakScan0123456789abcdef"  # split: no token-shaped literal in the repo


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every notebook, once, under tiny, with a (fake) Hugging Face token in the environment."""
    out = tmp_path_factory.mktemp("run")
    saved = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = FAKE_TOKEN
    try:
        results = {r.name: r for r in runner.run(None, profile="tiny", out=out, timeout=300, echo=print)}
        doctor = subprocess.run([sys.executable, "-m", "nbhelpers", "doctor", "--json"], capture_output=True, text=True)
    finally:
        os.environ.pop("HF_TOKEN") if saved is None else os.environ.__setitem__("HF_TOKEN", saved)
    return out, results, doctor


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_runs_under_tiny_offline(name, tiny_run):
    out, results, _ = tiny_run
    result = results[name]
    assert result.status == "ok", result.error
    summary = result.summary
    for key in ("notebook", "profile", "seed", "parameters", "timings"):
        assert key in summary
    assert summary["notebook"] == name and summary["profile"] == "tiny"
    for image in summary.get("images", []):
        assert (out / name / image).is_file()


@pytest.mark.slow
def test_the_token_is_never_written_or_printed(tiny_run):
    out, results, doctor = tiny_run
    assert doctor.returncode == 0 and '"hf_token": true' in doctor.stdout  # the token was there to leak
    assert FAKE_TOKEN not in doctor.stdout + doctor.stderr
    scanned = 0
    for path in out.rglob("*"):
        if path.is_file():
            scanned += 1
            assert FAKE_TOKEN.encode() not in path.read_bytes(), f"token leaked into {path}"
    assert scanned >= 2 * len(results)  # executed notebooks and summaries at least
    assert "report.html" in {p.name for p in out.iterdir()}


# What each lesson shows, under tiny. Thresholds sit below what the lab models reach (measured figures in the
# comments) and above what a broken lesson gives, so a lesson that stops teaching fails here.
def _summary(tiny_run, name):
    _, results, _ = tiny_run
    assert results[name].status == "ok", results[name].error
    return results[name].summary


@pytest.mark.slow
def test_00_finds_every_tiny_model_offline(tiny_run):
    summary = _summary(tiny_run, "00_setup")
    assert set(summary["models"]) == set(PROFILES["tiny"].models)
    for path in summary["models"].values():
        assert os.path.isdir(path) and any(name.endswith(".safetensors") for _, _, files in os.walk(path)
                                           for name in files)
    assert summary["doctor"]["dtype"] == "float32"  # no GPU: full precision


@pytest.mark.slow
def test_01b_offloading_is_exact_and_its_cache_pays(tiny_run):
    summary = _summary(tiny_run, "01b_mixtral_offload")
    exact = [row for row in summary["equivalence"] if row["quantization"] == "none"]
    assert exact and all(row["max_abs_logit_diff"] == 0.0 for row in exact)  # the cache moves experts, not maths
    rates = {(row["cache_size"], row["prefetch"]): row["hit_rate"] for row in summary["sweep"]}
    plain = [rates[size, False] for size in sorted({size for size, _ in rates})]
    assert plain == sorted(plain) and plain[-1] == 1.0  # measured 0.18, 0.37, 0.69, 1.0 for 1, 2, 4, 8 experts
    # Prefetching copies more experts; whether that pays depends on how well the next layer's router guesses:
    # on the lab Mixtral-Instruct it guesses right 23-30% of the time and lowers the hit rate (0.57 -> 0.45 at 2).
    assert all(rows["expert_copies_per_token"] >= plain_rows["expert_copies_per_token"]
               for rows, plain_rows in zip(summary["sweep"][1::2], summary["sweep"][0::2]))
    assert all(0 < row["prefetch_precision"] < 1 for row in summary["sweep"] if row["prefetch"] and row["cache_size"] < 8)
    assert summary["engine"]["hit_rate"] > 0.15  # measured 0.24 (int4, 2 of 8 experts per layer, prefetch on)


@pytest.mark.slow
def test_02_draws_what_the_prompt_asks(tiny_run):
    accuracy = _summary(tiny_run, "02_txt2img")["lab_accuracy"]
    assert accuracy["both"] >= 0.75  # colour and shape right in 3 of 4 images at least (measured 4 of 4)


@pytest.mark.slow
def test_03_repaints_the_mask_and_keeps_the_rest(tiny_run):
    for name, measured in _summary(tiny_run, "03_inpainting")["inpainting"].items():
        returned, composited = measured["returned"], measured["composited"]
        assert returned["masked_change"] >= 0.1, name  # the prompt's content was painted in (measured 0.35)
        # the pipeline's own output keeps the unmasked area close (VAE round trip, measured 0.056), not exact...
        assert returned["unmasked_change"] < returned["masked_change"] / 3, name
        # ...and compositing makes it exact without undoing the repaint
        assert composited["unmasked_identical"] and composited["masked_change"] >= 0.1, name


@pytest.mark.slow
def test_04_the_lora_teaches_stripes(tiny_run):
    rate = _summary(tiny_run, "04_lora")["stripe_rate"]
    assert rate["before"] <= 0.25 and rate["after"] >= 0.75  # held-out prompts: measured 0 of 4 -> 4 of 4


@pytest.mark.slow
def test_05_dreambooth_learns_the_subject_and_keeps_the_class(tiny_run):
    summary = _summary(tiny_run, "05_dreambooth")
    assert summary["subject_rate"]["before"] <= 0.25 and summary["subject_rate"]["after"] >= 0.5  # 0 -> 0.75
    # prior preservation: the class prompt's pictures move less than the identifier's (measured 0.09 vs 0.15)
    assert summary["class_drift"] < summary["identifier_change"]


@pytest.mark.slow
def test_06_benchmarks_measure_speed_and_lab_quality(tiny_run):
    summary = _summary(tiny_run, "06_benchmarks")
    assert summary["bench"] and all(row["it_per_s"] > 0 for row in summary["bench"])
    quality = summary["quality"]
    fid, kid = quality["fid"], quality["kid"]
    assert fid["metric"] == "lab-FID" and kid["metric"] == "lab-KID" and fid["n_generated"] == 48
    assert "biased" in fid["note"]  # 48 images: said, with the count
    # the lab SD is far closer to the drawings than noise is (measured lab-FID 2.2 vs 60; lab-KID -0.07 vs 6.4), and
    # near the floor of two sets of drawings (2.7): the lab judge reads shape poorly (data/lab/shape-features)
    noise, floor = quality["baseline_noise"], quality["baseline_drawings"]
    assert fid["value"] < noise["fid"] / 5 and kid["value"] < noise["kid"] / 5
    assert fid["value"] < 3 * floor["fid"]
    assert quality["lpips_diversity"]["value"] > 0.01  # seeds give different pictures
    assert quality["lab_accuracy"]["both"] >= 0.7  # colour and shape read back (chance: 1/36)
    assert quality["clip_score"]["value"] is None and "tiny" in quality["clip_score"]["reason"]
    rows = {(row["base"], row["method"]): row for row in summary["training"]}
    lora, dreambooth = rows[("profile train_base", "LoRA")], rows[("profile train_base", "DreamBooth-LoRA")]
    for row in rows.values():
        assert row["s_per_step"] > 0 and row["peak_mib"] > 0 and "not VRAM" in row["peak_kind"]
    assert dreambooth["prior_preservation"] and dreambooth["rank"] * 2 == lora["rank"]
    assert 1.6 < lora["lora_mib"] / dreambooth["lora_mib"] < 2.4  # rank 8 vs 4: twice the LoRA weights


@pytest.mark.slow
def test_07_recovers_from_memory_errors_and_diagnoses_errors(tiny_run):
    summary = _summary(tiny_run, "07_troubleshooting")
    oom = summary["out_of_memory"]
    assert oom["changes"] and oom["returned"] == oom["asked"]  # split into smaller batches, every image delivered
    assert all(summary["diagnosed"].values())
    assert "pickle" in summary["refusal"].lower() and "width" in summary["bad_input"]


@pytest.mark.slow
def test_01_shows_a_working_instruct_moe(tiny_run):
    """Under tiny, 01's chat lessons show working behaviour (the lab MoE in its task forms), not noise."""
    summary = _summary(tiny_run, "01_moe_inference")
    outcomes = summary["outcomes"]
    assert outcomes["guardrail_refuses"], summary["moderation"]["guardrail"]
    assert outcomes["policy_refuses_banned"] and outcomes["policy_answers_other"], summary["moderation"]["policy"]
    assert outcomes["moderation_correct"] == 1.0, summary["moderation"]["self_reflection"]
    assert outcomes["code_passes"], summary["code_check"]
    assert outcomes["needle_recall"] >= 2 / 3, summary["needle"]
    assert "lune" in summary["generations"][0]["text"]  # the default prompt: "Translate to French: moon"
    routing = summary["routing"]
    assert routing["same_first_expert_rate"] > 1.5 * routing["random_baseline"]


@pytest.mark.slow
def test_08_shows_what_sft_and_dpo_change(tiny_run):
    summary = _summary(tiny_run, "08_instruct")
    scores = summary["task_scores"]
    base, short_sft, sft, dpo = (scores[stage]["mean"] for stage in summary["stages"])
    # The shipped SFT checkpoint knows the tasks (5 of 6 measures near 100%; held-out policy refusal 71%, which its
    # DPO stage takes to 100%), the base model does not.
    assert base < 0.3 and sft >= 0.7, scores
    assert short_sft > base, scores  # a few SFT steps already teach the easy formats
    assert dpo >= sft - 0.1, scores  # a short DPO keeps what SFT taught
    margins = summary["dpo"]["rewards_margins"]
    assert margins[-1] > margins[0] and margins[-1] > 0, margins  # DPO separates chosen from rejected
    logps = summary["dpo"]
    drop_rejected = logps["logps_rejected"][0] - logps["logps_rejected"][-1]
    drop_chosen = logps["logps_chosen"][0] - logps["logps_chosen"][-1]
    assert drop_rejected > drop_chosen, logps
    assert summary["sft_loss"]["last"] < summary["sft_loss"]["first"]
