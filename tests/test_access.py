"""Gated models: a faked Hub refusal becomes one message naming the model, its licence page and HF_TOKEN."""

import importlib
from pathlib import Path

import pytest

from nbhelpers import access, doctor, env, loaders
from nbhelpers.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _hub_error(kind: str, status: int):
    """The exception huggingface_hub raises for a refused download, built on its own HTTP library."""
    from huggingface_hub import errors

    http = importlib.import_module(errors.HfHubHTTPError.__mro__[1].__module__.split(".")[0])
    url = f"https://huggingface.co/{MIXTRAL}/resolve/main/config.json"
    response = http.Response(status, request=http.Request("GET", url))
    return getattr(errors, kind)(f"{status} Client Error. Cannot access gated repo for url {url}.", response=response)


def _transformers_wrapped(status: int = 401):
    """What transformers raises on top of it: an OSError whose cause is the Hub's error."""
    try:
        raise _hub_error("GatedRepoError", status)
    except Exception as hub:
        try:
            raise OSError(f"You are trying to access a gated repo.\nMake sure to have access to it at "
                          f"https://huggingface.co/{MIXTRAL}.") from hub
        except OSError as wrapped:
            return wrapped


def _assert_clear(error: access.HubAccessError, model: str):
    text = str(error)
    assert model in text and f"https://huggingface.co/{model}" in text
    assert "HF_TOKEN" in text and "Colab" in text and "Secrets" in text
    assert "hf_" not in text.replace("HF_TOKEN", "")  # names the variable, never a token


@pytest.mark.parametrize("make", [lambda: _hub_error("GatedRepoError", 403), lambda: _hub_error("HfHubHTTPError", 401),
                                  lambda: _hub_error("HfHubHTTPError", 403), _transformers_wrapped])
def test_refusals_are_recognised_through_the_cause_chain(make):
    assert access.refusal(make()) in (401, 403, "gated")


@pytest.mark.parametrize("error", [ValueError("bad shape"), OSError("No space left on device"),
                                   RuntimeError("HTTP 500 Server Error")])
def test_other_errors_pass_through_unchanged(error):
    with pytest.raises(type(error)) as raised, access.hub_access(MIXTRAL):
        raise error
    assert raised.value is error


def test_load_chat_says_what_to_do_when_the_hub_refuses(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise _transformers_wrapped()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(env, "hf_token_available", lambda: False)
    with pytest.raises(access.HubAccessError) as raised:
        loaders.load_chat("t4")
    model = PROFILES["t4"].model("chat").source
    _assert_clear(raised.value, model)
    assert "no token was found" in str(raised.value) and isinstance(raised.value.__cause__, OSError)


def test_load_hub_pipeline_and_download_say_it_too(monkeypatch):
    import diffusers
    import huggingface_hub

    from nbhelpers import download

    sd3 = "stabilityai/stable-diffusion-3-medium-diffusers"
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(_hub_error("GatedRepoError", 403)))
    with pytest.raises(access.HubAccessError) as raised:
        loaders.load_hub_pipeline(sd3)
    _assert_clear(raised.value, sd3)
    assert "Stability AI Community License" in str(raised.value)

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(_hub_error("HfHubHTTPError", 401)))
    with pytest.raises(access.HubAccessError, match="granite"):
        download.prepare(PROFILES["t4"], tasks=["chat"])


def test_doctor_names_refused_models_and_warns_without_a_token(monkeypatch):
    import huggingface_hub

    def auth_check(model, token=None):
        if model == MIXTRAL:
            raise _hub_error("GatedRepoError", 403)

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    monkeypatch.setattr(env, "hf_token_available", lambda: False)
    monkeypatch.setattr(env, "gpu", lambda: {"name": "Tesla T4", "count": 1, "total_gb": 14.7, "free_gb": 14.6,
                                             "capability": "7.5", "bf16": False})
    report = doctor.report(check_access=True)
    errors = [p for p in report.problems if p[0] == "error" and MIXTRAL in p[1]]
    assert len(errors) == 1 and "HF_TOKEN" in errors[0][2] and f"https://huggingface.co/{MIXTRAL}" in errors[0][2]
    assert not any("stable-diffusion-3" in p[1] and p[0] == "error" for p in report.problems)  # that one passed
    warning = [p for p in report.problems if p[1].startswith("No Hugging Face token")]
    assert warning and all(model in warning[0][1] for model in access.gated_models())


def test_every_default_model_of_every_profile_is_in_the_licence_table():
    for profile in PROFILES.values():
        for spec in profile.models.values():
            assert access.licence_of(spec.source) is not None, spec.source
    from nbhelpers.plan import configs
    from nbhelpers.serve.vllm_engine import MODELS

    for name in configs.DIFFUSION:
        assert configs.source(name) in access.LICENCES
    for served in MODELS.values():
        assert served.hub in access.LICENCES and (served.awq is None or served.awq in access.LICENCES)


def test_readme_and_setup_notebook_show_the_table():
    import json

    readme = (ROOT / "README.md").read_text()
    setup = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / "00_setup.ipynb").read_text())["cells"]
                    if c["cell_type"] == "markdown")
    for text in (readme, setup):
        for model, entry in access.LICENCES.items():
            row = next(line for line in text.splitlines() if model in line and line.startswith("|"))
            cells = [cell.strip() for cell in row.strip().strip("|").split("|")]  # columns of licence_table()
            assert cells[2] == entry.licence and cells[4] == ("yes" if entry.gated else "no"), row
        assert "HF_TOKEN" in text
