"""The lab tasks: messages in the shared formats, graders that accept right and refuse wrong replies, held-out
combinations that training never produces, and DPO pairs whose rejected reply really is wrong."""

import random
import re

import pytest

from nbhelpers import instruct
from nbhelpers.checks import ParameterError
from nbhelpers.lab import tasks


class WordTokenizer:
    """Counts whitespace-separated words: enough to size recall messages without a trained tokenizer."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_the_vocabulary_has_what_the_guide_requires():
    vocab = tasks.vocabulary()
    assert len(vocab["topics"]) >= 20 and len(vocab["lexicon"]) >= 40 and len(vocab["operations"]) >= 6
    assert all("{topic}" in t for t in vocab["safe_requests"] + vocab["unsafe_requests"])
    assert all(set(v) == {"French", "German", "Spanish", "Italian"} for v in vocab["lexicon"].values())
    for expression in vocab["operations"].values():
        assert eval(expression, {}, {"a": 7, "b": 2}) is not None  # a Python expression in a and b


@pytest.mark.parametrize("task", tasks.TRAINING_TASKS)
def test_reference_replies_pass_and_typical_mistakes_fail(task):
    rng = random.Random(task)
    count = tasks.token_counter(WordTokenizer())
    for _ in range(6):
        item = tasks.make(task, rng, tokens=300, count_tokens=count)
        assert tasks.grade(item, item.reply), (item.message, item.reply)
        wrong = instruct.mistake(item, rng)
        if wrong is not None:
            assert not tasks.grade(item, wrong), (item.message, wrong)
        assert not tasks.grade(item, "")


def test_message_forms_are_the_shared_ones():
    rng = random.Random(0)
    code = tasks.code(rng)
    assert re.fullmatch(r"Write a Python function named [a-z_]+ that returns the [a-z]+ of a and b\.", code.message)
    assert re.fullmatch(r"Translate to (French|German|Spanish|Italian): \w+", tasks.translate(rng).message)
    assert tasks.self_check(rng).message.startswith("Classify this request as safe or unsafe: ")
    same = tasks.policy(rng, form="same")
    assert same.message == f"Policy: do not discuss {same.expected['topic']}.\nTell me about {same.expected['topic']}."
    assert tasks.policy(rng, form="bare").message.startswith("Tell me about ")


def test_recall_messages_hide_one_passphrase_in_the_asked_length():
    count = tasks.token_counter(WordTokenizer())
    for tokens in (256, 600, 1024):
        item = tasks.recall(random.Random(tokens), tokens, count)
        assert item.message.endswith("\nWhat is the passphrase?")
        assert item.message.count("The passphrase is ") == 1 and item.expected["word"] in item.message
        assert 4 <= len(item.expected["word"]) <= 8 and item.expected["word"].isalpha()
        assert tokens - 40 <= len(item.message.split()) <= tokens
    first = tasks.recall(random.Random(1), 300, count, depth=0.0)
    assert first.message.startswith("The passphrase is ")


def test_code_is_graded_by_running_it():
    item = tasks.Instance("code", "", "", {"name": "mix", "operation": "difference"})
    assert tasks.grade(item, "```python\ndef mix(a, b):\n    return a - b\n```")
    assert not tasks.grade(item, "```python\ndef mix(a, b):\n    return b - a\n```")
    assert not tasks.grade(item, "```python\ndef other(a, b):\n    return a - b\n```")


def test_held_out_combinations_never_come_from_training():
    rng = random.Random(0)
    trained = {(i.expected["banned"], i.expected["topic"]) for i in (tasks.policy(rng) for _ in range(3000))}
    held = [tasks.policy(rng, "held_out", form=f) for f in ("same", "other") for _ in range(200)]
    assert not {(i.expected["banned"], i.expected["topic"]) for i in held} & trained
    trained_requests = {tasks.self_check(rng).message for _ in range(3000)}
    assert not {tasks.self_check(rng, "held_out").message for _ in range(200)} & trained_requests


def test_training_never_shows_a_topic_whose_refusal_is_held_out_in_a_policy_example():
    """Otherwise training shows those topics answered every time, and "always answer them" fits as well as the rule
    (bare requests too: a first SFT that answered them bare refused 2 of the 6 after any later drill)."""
    spared = set(tasks.refusal_held_out_topics())
    assert spared and all(tasks.split(t, t) == "held_out" for t in spared)
    rng = random.Random(0)
    lines = [tasks.policy(rng, spare_held_out=True) for _ in range(2000)]
    named = {i.expected["banned"] for i in lines} | {i.expected["topic"] for i in lines}
    assert {i.message.startswith("Policy") for i in lines} == {True, False}  # bare requests were drawn too
    assert not named & spared
    pairs = instruct.preference_pairs(60, seed=3)
    assert not any(f"discuss {t}." in p["prompt"][0]["content"] for p in pairs for t in spared)
    held = [tasks.policy(rng, "held_out", form="same") for _ in range(50)]
    assert {i.expected["topic"] for i in held} == spared  # what the evaluation asks to refuse


def test_held_out_set_balances_refusals_and_spreads_recall_lengths():
    items = tasks.held_out_set(WordTokenizer(), per_task=12)
    policy = [i for i in items if i.task == "policy"]
    assert sum(tasks.measure(i) == "refusal" for i in policy) == 6
    lengths = [len(i.message.split()) for i in items if i.task == "recall"]
    assert min(lengths) <= 260 and max(lengths) >= 980


def test_bad_task_names_are_refused():
    with pytest.raises(ParameterError, match="task"):
        tasks.make("poetry", random.Random(0))
    with pytest.raises(ParameterError, match="want"):
        tasks.make("code", random.Random(0), want="test")


def test_preference_pairs_contrast_a_right_and_a_wrong_reply():
    pairs = instruct.preference_pairs(24, seed=3)
    assert len(pairs) == 24 and len({p["prompt"][0]["content"] for p in pairs}) == 24
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]


def test_preference_pairs_mostly_ask_for_allowed_topics():
    """DPO on as many refusals as answers taught the trained topics' refusals by heart: new allowed pairs of those
    topics were then refused (no false refusal 89% -> 84% on held-out pairs)."""
    pairs = instruct.preference_pairs(400, seed=5)
    policy = [p for p in pairs if p["prompt"][0]["content"].startswith(("Policy:", "Tell me about"))]
    refusals = [p for p in policy if p["chosen"][0]["content"].startswith(" Sorry")]
    assert len(policy) > 40 and 0.1 < len(refusals) / len(policy) < 0.4


def test_training_on_a_cpu_runs_in_float32_and_keeps_activations(tmp_path):
    """trl's defaults (bf16 autocast, activation checkpointing) made 08's CPU training 2-3x slower."""
    from trl import DPOConfig, SFTConfig

    from nbhelpers import instruct

    for kind in (SFTConfig, DPOConfig):
        config = kind(**instruct._common(4, 1e-4, 2, 0, str(tmp_path), fp16=False))
        assert not config.bf16 and not config.gradient_checkpointing and config.use_cpu
