"""The shipped lab MoE's base stage (data/lab/mixtral): the Mixtral chat format, its corpus languages, and routing
that follows the text the way the Mixtral paper found (consecutive tokens keep their expert far more often than
chance; no expert owns a language)."""

import pytest
import torch

from nbhelpers.lab import train_moe
from nbhelpers.paths import data_dir

FOLDER = data_dir() / "lab" / "mixtral"
# Measured when shipped (base of the instruct recipe): consecutive tokens keep their first expert 0.68 of the time at
# the best layer (chance 0.125); mutual information between corpus kind and first expert 0.014-0.06 bits per layer,
# against 0.006-0.016 with the kinds shuffled.


@pytest.fixture(scope="module")
def lab():
    from transformers import AutoTokenizer, MixtralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    model = MixtralForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, use_safetensors=True).eval()
    return model, tokenizer


def test_lab_moe_is_a_mixtral_with_the_mixtral_tokenizer(lab):
    model, tokenizer = lab
    assert model.config.num_local_experts == 8 and model.config.num_experts_per_tok == 2
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token) == \
        ("<s>", "</s>", "<unk>", "</s>")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Yo"}],
                                         tokenize=False)
    assert text == "<s>[INST] Hi [/INST] Yo</s>"


# The answer patterns of the corpus chats; the facts inside are not reliable (it answered Italy's capital with
# Egypt's) and its sums are wrong: it learned the shape of an answer, not arithmetic.
@pytest.mark.parametrize("question, expected", [("What is the capital of Italy?", " The capital of "),
                                                ("What colour is the sky?", " The sky is "),
                                                ("What is 3 plus 4?", " ")])
def test_lab_moe_answers_in_the_chat_format(lab, question, expected):
    model, tokenizer = lab
    answer = train_moe.answer(model, tokenizer, question)
    assert answer.startswith(expected) and answer.endswith("</s>"), answer


def test_lab_moe_continues_a_french_template_in_french(lab):
    model, tokenizer = lab
    ids = tokenizer("Le chat", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=2)
    continuation = tokenizer.decode(out[0, ids.shape[1]:])
    french = {"dort", "joue", "court", "mange", "attend", "chante"}
    assert continuation.split()[0] in french, continuation


def test_lab_moe_routing_follows_the_text_not_one_expert_per_language(lab):
    from nbhelpers import moe
    from nbhelpers.moe.routing import LANGUAGE_PROMPTS

    model, tokenizer = lab
    routings = [moe.capture_routing(model, tokenizer, text) for text in LANGUAGE_PROMPTS.values()]
    rates = moe.same_first_expert_rate(routings)
    assert rates["rate"] > 3 * rates["random_baseline"], rates  # Mixtral: 24-28% against 12.5% at layer 15
    report = train_moe.routing_report(model, tokenizer, docs_per_kind=12)
    # Routing knows the kind of text a little on every layer (kind-blind routing scores the shuffled value)...
    assert all(m > s for m, s in zip(report["mi_bits"], report["mi_bits_shuffled"])), report
    # ...but no layer sends a language to its own experts: far below the log2(7) = 2.8 bits of that.
    assert max(report["mi_bits"]) < 0.5, report["mi_bits"]
