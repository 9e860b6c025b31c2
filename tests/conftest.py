import os

# Tests never reach the Hugging Face Hub: set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture
def local_runtime(monkeypatch):
    """A plain local machine: no Colab or Kaggle markers, whatever the test machine has."""
    import sys

    for name in ("COLAB_RELEASE_TAG", "COLAB_GPU", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    return monkeypatch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors gain nothing from threads; on a shared 2-core machine OpenMP workers spin against each other
    (an equivalence table took 8.6 s with 2 threads and 0.12 s with 1 under load). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_tiny():
    """The `tiny` profile with the seeded random builders instead of the lab models: fixed small sizes, a
    9-channel inpainting UNet, and mechanics tests that do not depend on what the lab models learned."""
    from dataclasses import replace

    from nbhelpers.profiles import PROFILES, ModelSpec

    tiny = PROFILES["tiny"]
    models = {"chat": ModelSpec("tiny:mixtral"), "txt2img": ModelSpec("tiny:sd"),
              "inpaint": ModelSpec("tiny:sd-inpaint"), "train_base": ModelSpec("tiny:sd")}
    return replace(tiny, models=models)


@pytest.fixture(scope="session")
def tiny_chat(random_tiny):
    """The random-weight tiny Mixtral (2 layers, 512-token vocabulary) and its tokenizer, through the profile loader.

    Tests that build other architectures around its tokenizer need these fixed sizes; the `tiny` profile itself
    chats with the trained lab model (tests/test_lab_moe.py)."""
    from nbhelpers import loaders

    return loaders.load_chat(random_tiny)
