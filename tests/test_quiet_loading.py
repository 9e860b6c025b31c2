"""Loading the tiny models prints nothing a learner cannot act on; real warnings still get through."""

import logging
import os
import subprocess
import sys
import textwrap

from nbhelpers import persist, quiet

LOAD_TINY_MODELS = textwrap.dedent("""
    import warnings
    with warnings.catch_warnings(record=True) as caught:  # the interpreter's default filters, as a kernel has
        import transformers  # as a script or notebook may do first: the model cache note must not fire for it
        from nbhelpers import loaders
        loaders.load_chat("tiny")
        loaders.load_diffusion("tiny")
        loaders.load_diffusion("tiny", task="inpaint")
    for warning in caught:
        print(f"{warning.category.__name__}: {warning.message}")
""")


def test_loading_the_tiny_models_prints_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "PYTHONWARNINGS")}
    env.update(HF_HUB_OFFLINE="1", NBHELPERS_CACHE=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", LOAD_TINY_MODELS], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=3600)  # a hang guard, not a time limit
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_the_filter_drops_the_torchvision_note_and_keeps_other_warnings(caplog):
    quiet.install()
    quiet.install()  # idempotent: one filter
    logger = logging.getLogger(quiet.IMPORT_NOTES)
    assert sum(isinstance(f, quiet.DropUnactionableNotes) for f in logger.filters) == 1
    # transformers stops its loggers propagating once it configures them, or not, depending on what ran before:
    # listen on the logger itself, with propagation off, so that each record is seen exactly once either way
    propagate = logger.propagate
    logger.propagate = False
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=quiet.IMPORT_NOTES):
            logger.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                           "`CLIPImageProcessorPil` for backward compatibility.")
            logger.warning("something else went wrong")
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_the_model_cache_note_only_when_the_cache_really_changes(monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants  # imported: the situation the note is about

    monkeypatch.delenv("HF_HOME", raising=False)
    read_at_import = constants.HF_HOME
    persist.configure_model_cache(read_at_import)  # what the libraries use already: nothing to restart
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("HF_HOME", raising=False)
    persist.configure_model_cache(tmp_path / "elsewhere")
    note = capsys.readouterr().out
    assert "restart Python" in note and "runtime" not in note  # no Colab/Kaggle runtime on this machine
