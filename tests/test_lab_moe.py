"""The shipped lab MoE answers in the Mixtral chat format and its experts specialise (loads data/lab/mixtral)."""

import pytest
import torch

from nbhelpers.lab import train_moe
from nbhelpers.paths import data_dir

FOLDER = data_dir() / "lab" / "mixtral"
# Mutual information (bits) between a token's corpus kind and its first expert, on every layer. Measured when
# shipped: 0.14-0.22 trained, 0.03-0.05 for the same architecture untrained, ~0.01 with kinds shuffled.
MI_MARGIN = 0.08


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


# Facts and phrasing it learned; its sums are wrong (it copies the answer pattern, not the arithmetic).
@pytest.mark.parametrize("question, expected", [("What is the capital of Italy?", " The capital of Italy is Rome."),
                                                ("What colour is the sky?", " The sky is blue."),
                                                ("What is 3 plus 4?", " 3 plus 4 is ")])
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


def test_lab_moe_routing_depends_on_the_language(lab):
    model, tokenizer = lab
    report = train_moe.routing_report(model, tokenizer, docs_per_kind=12)
    # Kind-blind routing (same choices, kinds shuffled) scores ~0.01 bits; the trained router far more.
    assert min(report["mi_bits"]) > MI_MARGIN, report["mi_bits"]
    assert min(m - s for m, s in zip(report["mi_bits"], report["mi_bits_shuffled"])) > MI_MARGIN
