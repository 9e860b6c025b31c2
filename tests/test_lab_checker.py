"""The lab checker and the lab corpus: exact on clean pictures, deterministic text."""

import pytest

from nbhelpers.checks import ParameterError
from nbhelpers.lab import checker, corpus, shapes


def test_checker_reads_clean_images_exactly():
    pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]  # held-out pairs too
    specs = shapes.sample(108, seed=3, pairs=pairs)
    report = checker.score([shapes.draw(spec) for spec in specs], specs)
    assert report["accuracy"] == {"colour": 1.0, "shape": 1.0, "background": 1.0, "both": 1.0}
    assert min(p["iou"] for p in report["predictions"]) > 0.8


def test_checker_sees_an_empty_picture_as_no_shape():
    from PIL import Image

    prediction = checker.analyse(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert prediction["background"] == "gray" and prediction["shape"] is None and prediction["colour"] is None


def test_checker_works_at_other_sizes():
    spec = shapes.ShapeSpec("orange", "star", "black")
    assert checker.analyse(shapes.draw(spec, 96))["shape"] == "star"


def test_checker_rejects_mismatched_lengths():
    with pytest.raises(ParameterError):
        checker.score([shapes.draw(shapes.ShapeSpec("red", "circle"))], [])


def test_corpus_is_deterministic_and_covers_every_kind():
    first, again = corpus.documents(70, seed=4), corpus.documents(70, seed=4)
    assert first == again and first != corpus.documents(70, seed=5)
    assert {d["kind"] for d in first} == set(corpus.KINDS)
    # document i does not depend on how many documents were asked for
    assert corpus.documents(7, seed=4) == first[:7]


def test_corpus_chats_use_the_mixtral_format():
    for doc in corpus.documents(70, seed=0, kinds=("chat",)):
        assert doc["text"].startswith("<s>[INST] ") and doc["text"].endswith("</s>")
        assert doc["text"].count("[INST]") == doc["text"].count("[/INST]") == doc["text"].count("</s>")


def test_corpus_rejects_unknown_kinds():
    with pytest.raises(ParameterError):
        corpus.documents(3, kinds=("klingon",))


def test_lab_captions_are_parsed_and_other_prompts_are_not_scored():
    assert shapes.parse_caption("A red circle with stripes on a gray background") == shapes.ShapeSpec("red", "circle",
                                                                                                      "gray")
    assert shapes.parse_caption("a lighthouse on a cliff at dusk") is None
    spec = shapes.ShapeSpec("green", "star")
    images = [shapes.draw(spec), shapes.draw(shapes.ShapeSpec("green", "circle"))]
    assert checker.score_prompt(images, shapes.caption(spec))["both"] == 0.5
    assert checker.score_prompt(images, "a photo of a cat") is None
