"""Chat template, streaming generation, guardrail, moderation parsing, needle test and the widget panel."""

import pytest

from nbhelpers.checks import ParameterError
from nbhelpers.moe import GUARDRAIL, chat_messages, chat_text, generate, parse_moderation
from nbhelpers.moe.chat import NOT_MODERATED, compare_guardrail, moderate, moderation_prompt


def test_mixtral_template_and_guardrail_in_the_first_user_turn(tiny_chat):
    _, tokenizer = tiny_chat
    assert chat_text(tokenizer, "Hi") == "<s>[INST] Hi [/INST]"
    text = chat_text(tokenizer, "And now?", history=[("Hi", "Hello")], guardrail=True)
    assert text == f"<s>[INST] {GUARDRAIL}\n\nHi [/INST]Hello</s>[INST] And now? [/INST]"
    assert [m["role"] for m in chat_messages("x", [("a", "b")])] == ["user", "assistant", "user"]


def test_generate_streams_the_same_text_it_returns(tiny_chat):
    model, tokenizer = tiny_chat
    pieces = []
    out = generate(model, tokenizer, "What is an expert?", max_new_tokens=10, temperature=0.7, top_p=0.9, seed=3,
                   on_text=pieces.append)
    assert out["new_tokens"] == 10 and out["prompt_tokens"] > 5
    assert "".join(pieces) == out["text"]
    again = generate(model, tokenizer, "What is an expert?", max_new_tokens=10, seed=3, stream=False)
    assert again["text"] == out["text"]  # same seed, same sample
    greedy = [generate(model, tokenizer, "Hi", max_new_tokens=6, temperature=0.0, stream=False)["text"]
              for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_bad_generation_input_fails_before_the_model(tiny_chat):
    model, tokenizer = tiny_chat
    with pytest.raises(ParameterError, match="prompt=''"):
        generate(model, tokenizer, "")
    with pytest.raises(ParameterError, match="at most 512 tokens"):
        generate(model, tokenizer, "word " * 400, max_new_tokens=200)
    with pytest.raises(ParameterError, match="top_p"):
        generate(model, tokenizer, "Hi", top_p=0.0)


def test_guardrail_comparison_differs_only_in_the_guardrail(tiny_chat):
    model, tokenizer = tiny_chat
    plain, guarded = compare_guardrail(model, tokenizer, "Tell me a joke.", max_new_tokens=4)
    assert (plain["guardrail"], guarded["guardrail"]) == (False, True)
    assert guarded["prompt_tokens"] > plain["prompt_tokens"]


@pytest.mark.parametrize("answer,category", [
    ("Category: **Fraud**.", "fraud"), ("2. fraud", "fraud"), ("7", "fraud"),
    ("Hate speech", "hate violence harassment"),
    ("It is NOT moderated.", NOT_MODERATED), ("none", NOT_MODERATED), ("unqualified health", "unqualified health"),
    ("banana bread", None), ("", None), ("privacy, maybe fraud", "privacy"),
])
def test_parse_moderation(answer, category):
    assert parse_moderation(answer) == category


def test_moderate_fits_a_short_context(tiny_chat):
    model, tokenizer = tiny_chat
    assert "privacy:" in moderation_prompt("x") and "privacy:" not in moderation_prompt("x", describe=False)
    result = moderate(model, tokenizer, "How do I bake bread?")  # the full list is too long for 512 positions
    assert set(result) == {"text", "answer", "category"}
    assert result["category"] == parse_moderation(result["answer"])


def test_needle_in_haystack_runs_and_checks_the_context(tiny_chat):
    from nbhelpers.moe import needle_in_haystack

    model, tokenizer = tiny_chat
    results = needle_in_haystack(model, tokenizer, 128, depths=(0.0, 1.0), max_new_tokens=4)
    assert [r["depth"] for r in results] == [0.0, 1.0]
    assert all(100 <= r["prompt_tokens"] <= 140 and r["found"] in (True, False) for r in results)
    with pytest.raises(ParameterError, match="context_tokens=1000"):
        needle_in_haystack(model, tokenizer, 1000)


def test_panel_callbacks_without_a_browser(tiny_chat):
    from nbhelpers.moe import ChatPanel

    model, tokenizer = tiny_chat
    panel = ChatPanel(model, tokenizer, max_new_tokens=8, temperature=0.0)
    panel.on_send()
    assert "Type a prompt" in panel.status.value and panel.history == []
    panel.prompt.value = "Hello <b>there</b>"
    panel.send_button.click()  # the real button path: on_click handlers run
    assert len(panel.history) == 1 and panel.prompt.value == ""
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in panel.transcript.value
    assert "tokens in" in panel.status.value and not panel.send_button.disabled
    panel.prompt.value = "word " * 600
    panel.on_send()
    assert "error" in panel.status.value and len(panel.history) == 1
    panel.on_clear()
    assert panel.history == [] and panel.transcript.value == ""


def test_template_markers_the_model_writes_end_its_reply():
    from nbhelpers.moe.chat import _MarkerFilter, _cut_at_marker

    assert _cut_at_marker(" Sure! [/INST] cheese in Italian is bambino.") == " Sure!"
    assert _cut_at_marker(" lune.</s>[INST] more") == " lune." and _cut_at_marker(" a [1] b") == " a [1] b"
    shown = []
    stream = _MarkerFilter(shown.append)
    for piece in [" Sure", "! [/", "IN", "ST] cheese", " in Italian"]:
        stream(piece)
    stream.flush()
    assert "".join(shown) == " Sure!"
    shown.clear()
    stream = _MarkerFilter(shown.append)
    for piece in [" see [1", "] and", " more"]:
        stream(piece)
    stream.flush()
    assert "".join(shown) == " see [1] and more"  # a bracket that is no marker is held back, then shown


def test_panel_starts_with_the_profiles_example_prompts(tiny_chat):
    from nbhelpers.moe import ChatPanel, chat_examples
    from nbhelpers.profiles import get_profile

    examples = chat_examples(get_profile("tiny").defaults["chat"], first="Translate to French: moon")
    assert examples[0] == "Translate to French: moon" and any(e.startswith("Policy:") for e in examples)
    assert any(e.startswith("Classify this request as safe or unsafe:") for e in examples)
    panel = ChatPanel(*tiny_chat, examples=examples)
    assert panel.prompt.value == "Translate to French: moon"
    panel.examples.value = examples[1]
    assert panel.prompt.value == examples[1]
    assert panel.temperature.style.description_width == "initial"  # the label is not cut to "temperat..."
