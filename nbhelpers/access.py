"""Who may use each default model, and one clear message when the Hugging Face Hub refuses a download.

Two defaults are **gated**: the Hub serves their files only to a logged-in account that accepted the terms on the
model's page, and only with that account's token. Without it the libraries fail with a bare "401 Client Error" or
"403 Forbidden" deep in a traceback. `hub_access(model)` turns those into `HubAccessError`, which names the model,
the page where its licence is accepted and how to give the notebook a token (Colab: the HF_TOKEN secret).
The token itself is never printed or saved.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

HUB = "https://huggingface.co"
TOKENS_PAGE = f"{HUB}/settings/tokens"


@dataclass(frozen=True)
class Licence:
    licence: str
    commercial: str
    gated: bool
    used_by: str  # profiles and notebooks that load it by default

    @property
    def action(self) -> str:
        if self.gated:
            return "log in, accept the terms on the model page, set HF_TOKEN (Colab: Secrets)"
        return "nothing (downloads without a token)"


OPENRAIL = "yes, within the licence's use restrictions, which you must pass on to your users"
LICENCES = {
    "lab:mixtral-instruct": Licence("Apache-2.0 (this repository; trained here)", "yes", False,
                                    "tiny: chat (01, 01b, 09); with its stages lab:mixtral and lab:mixtral-sft, 08"),
    "lab:sd": Licence("Apache-2.0 (this repository; trained here; CLIP vocabulary MIT)", "yes", False,
                      "tiny: txt2img, inpaint, LoRA/DreamBooth base (02-05)"),
    "ibm-granite/granite-3.1-3b-a800m-instruct": Licence("Apache-2.0", "yes", False, "t4: chat (01, 09)"),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": Licence("CreativeML OpenRAIL-M", OPENRAIL, False,
                                                           "t4: txt2img; t4, large: LoRA/DreamBooth base"),
    "stable-diffusion-v1-5/stable-diffusion-inpainting": Licence("CreativeML OpenRAIL-M", OPENRAIL, False,
                                                                 "t4: inpaint (03)"),
    "ibm-granite/granite-3.1-1b-a400m-base": Licence("Apache-2.0", "yes", False, "t4, large: 08 (SFT starts here)"),
    "ibm-granite/granite-3.1-1b-a400m-instruct": Licence("Apache-2.0", "yes", False, "t4, large: 08 (DPO starts here)"),
    "allenai/OLMoE-1B-7B-0125-Instruct": Licence("Apache-2.0", "yes", False, "large: chat (01, 09)"),
    "stabilityai/stable-diffusion-xl-base-1.0": Licence("CreativeML Open RAIL++-M", OPENRAIL, False,
                                                        "large: txt2img (02); 06; t4, large: SDXL LoRA/DreamBooth "
                                                        "base (`base=\"train_sdxl\"`, 04/05)"),
    "madebyollin/sdxl-vae-fp16-fix": Licence("MIT", "yes", False, "t4, large: the VAE of SDXL training (fp16-safe)"),
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": Licence("CreativeML Open RAIL++-M", OPENRAIL, False,
                                                                "large: inpaint (03)"),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": Licence("Apache-2.0", "yes", True,
                                                    "t4, large: 01b (expert offloading); 09 (vLLM, large GPUs)"),
    "TheBloke/Mixtral-8x7B-Instruct-v0.1-AWQ": Licence("Apache-2.0 (Mixtral's)", "yes", False,
                                                       "09: vLLM on two T4s"),
    "stabilityai/stable-diffusion-3-medium-diffusers": Licence(
        "Stability AI Community License", "free below USD 1M annual revenue; above, an Enterprise licence", True,
        "06 (benchmarks)"),
    "black-forest-labs/FLUX.1-schnell": Licence("Apache-2.0", "yes", False, "06 (benchmarks)"),
    "openai/clip-vit-base-patch16": Licence("MIT", "yes", False, "06 (CLIP score)"),
}


LAB = Licence("Apache-2.0 (this repository; trained here)", "yes", False, "tiny")
TINY = Licence("Apache-2.0 (this repository; random weights built on your machine)", "yes", False, "tiny")


def licence_of(source: str) -> Licence | None:
    """The entry for a model source; every `lab:` model is this repository's own work, every `tiny:` one is built
    from a seed on the user's machine (nbhelpers.tiny)."""
    return LICENCES.get(source) or (LAB if source.startswith("lab:") else TINY if source.startswith("tiny:") else None)


def page(model: str) -> str:
    return f"{HUB}/{model}"


def licence_table() -> list[dict]:
    """One row per default model: what the README and 00_setup show."""
    return [{"model": model if model.startswith("lab:") else f"[{model}]({page(model)})", "used by": entry.used_by,
             "licence": entry.licence, "commercial use": entry.commercial, "gated": "yes" if entry.gated else "no",
             "what you must do": "nothing (shipped in data/lab)" if model.startswith("lab:") else entry.action}
            for model, entry in LICENCES.items()]


def gated_models() -> list[str]:
    return [model for model, entry in LICENCES.items() if entry.gated]


class HubAccessError(PermissionError):
    """The Hub refused a model: gated and not accepted, no token, or a token without access."""

    def __init__(self, model: str, status: int | str | None = None):
        from nbhelpers import env

        self.model, self.status = model, status
        entry = LICENCES.get(model)
        terms = f" ({entry.licence})" if entry else ""
        token = "a token was found (not shown), but its account has no access yet" if env.hf_token_available() \
            else "no token was found"
        super().__init__(
            f"The Hugging Face Hub refused {model} ({status or 'gated'}); {token}.\n"
            f"  1. Log in and accept the model's licence{terms} on its page: {page(model)}\n"
            f"  2. Create a read token: {TOKENS_PAGE}\n"
            "  3. Colab: key icon (Secrets) in the left bar > Add new secret > name HF_TOKEN, value the token, "
            "give this notebook access, then run the cell again. Elsewhere: export HF_TOKEN=<your token> before "
            "starting Python.\n"
            "  (A 401 also comes back for a misspelt or private model id.)")


_TEXT = re.compile(r"gated repo|is restricted|\b(401|403)\b[^\n]*(client error|unauthorized|forbidden)",
                   re.IGNORECASE)


def refusal(error: BaseException) -> int | str | None:
    """401, 403 or "gated" when `error` (or an exception it was raised from) is the Hub refusing access."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ == "GatedRepoError":
            return "gated"
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            return status
        match = _TEXT.search(str(error))
        if match:
            return int(match.group(1)) if match.group(1) else "gated"
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def hub_access(model: str):
    """Re-raise the Hub refusing `model` as HubAccessError (the original stays attached as its cause)."""
    try:
        yield
    except HubAccessError:
        raise
    except Exception as error:
        status = refusal(error)
        if status is None:
            raise
        raise HubAccessError(model, status) from error


def check_access(models=None) -> list[tuple[str, str]]:
    """(model, message) for each gated model this account cannot download; asks the Hub (network), no download."""
    from huggingface_hub import auth_check

    from nbhelpers import env

    refused = []
    for model in models or gated_models():
        try:
            with hub_access(model):
                auth_check(model, token=env.hf_token())
        except HubAccessError as error:
            refused.append((model, str(error)))
        except Exception as error:  # offline, or the Hub is down: the doctor must still answer
            refused.append((model, f"Could not ask the Hub about {model}: {type(error).__name__}: {error}"))
    return refused
