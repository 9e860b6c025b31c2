"""The shipped instruct lab MoE (data/lab/mixtral-instruct) meets the lab-task goals on held-out instances,
greedy, through plain transformers; its earlier stages (base, SFT) are shipped beside it for notebook 08."""

import pytest

from nbhelpers.lab import tasks, train_instruct
from nbhelpers.paths import data_dir

LAB = data_dir() / "lab"
# The goals of issue 13, on held-out instances (new passphrases, function names, topic/policy pairs, requests).
GOALS = {"recall": 0.9, "self_check": 0.9, "code": 0.8, "translate": 0.8}
# Refusing by the rule: the banned topics asked here were never refused in training (nor named in any policy
# example), and the allowed pairs were never trained as pairs.
POLICY_GOALS = {"refusal": 0.9, "no_false_refusal": 0.9}


def load(name):
    return train_instruct.load(LAB / name)  # the recipe's own loader: float32 compute, eager experts


@pytest.fixture(scope="module")
def instruct_model():
    return load("mixtral-instruct")


@pytest.fixture(scope="module")
def held_out_rates(instruct_model):
    model, tokenizer = instruct_model
    items = tasks.held_out_set(tokenizer, per_task=30, seed=7)  # another seed than the model card's evaluation
    lengths = [len(tokenizer(i.message)["input_ids"]) for i in items if i.task == "recall"]
    assert min(lengths) <= 300 and 950 <= max(lengths) <= 1100  # recall over the whole 256-1,024 range
    return tasks.score(model, tokenizer, items)["rates"]


def test_the_instruct_model_meets_the_goals_on_held_out_tasks(held_out_rates):
    missed = {name: (held_out_rates[name], goal) for name, goal in GOALS.items() if held_out_rates[name] < goal}
    assert not missed, f"below the goal: {missed}; all rates {held_out_rates}"


def test_the_instruct_model_refuses_by_the_policy_rule(held_out_rates):
    missed = {name: (held_out_rates[name], goal) for name, goal in POLICY_GOALS.items()
              if held_out_rates[name] < goal}
    assert not missed, f"below the goal: {missed}"


def test_it_answers_through_plain_transformers_with_the_chat_template(instruct_model):
    model, tokenizer = instruct_model
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Translate to German: mountain"}],
                                        add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Berg" in tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert model.config.max_position_embeddings >= 1100 and model.config.num_local_experts == 8


def test_the_base_model_does_not_know_the_tasks():
    """What SFT adds: the pretrained model alone fails the task forms (notebook 08's starting point)."""
    model, tokenizer = load("mixtral")
    rates = tasks.score(model, tokenizer, tasks.held_out_set(tokenizer, per_task=4, seed=7))["rates"]
    assert sum(rates.values()) / len(rates) < 0.3, rates


def test_the_policy_drill_uses_hundreds_of_single_token_words_and_follows_the_rule():
    """The drill is what teaches the rule: too few words and the model learns which pairs to refuse instead."""
    import random

    model, tokenizer = load("mixtral")
    words = train_instruct.stand_in_words(tokenizer)
    assert len(words) >= 300 and not set(words) & set(tasks.vocabulary()["topics"])
    assert all(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1 for w in words)
    near = train_instruct.confusable_words(model, words, tokenizer, k=4)
    assert all(len(n) == 4 and w not in n for w, n in near.items())
    rng = random.Random(0)
    items = [train_instruct.policy_drill(rng, near) for _ in range(400)]
    refused = [i.expected["banned"] == i.expected["topic"] for i in items]
    assert 0.4 < sum(refused) / len(items) < 0.6
    assert all(tasks.grade(i, i.reply) for i in items)
    assert all(i.reply.startswith(" Sorry") == r for i, r in zip(items, refused))


def test_the_crowd_drill_tells_close_words_apart_and_keeps_bare_requests_answered():
    """The topics' embeddings sit close together; a drill only on scattered words left held-out allowed topic pairs
    refused (46% answered), and a drill with no bare request made "Tell me about tulips." refused."""
    import random

    model, tokenizer = load("mixtral-sft")
    crowd = train_instruct.crowd_words(model, tokenizer, 24)
    words = train_instruct.stand_in_words(tokenizer)
    assert len(set(crowd)) == 24 and set(crowd) <= set(words)
    assert train_instruct.crowding(model, tokenizer, crowd) > train_instruct.crowding(model, tokenizer, words) + 0.1
    near = train_instruct.confusable_words(model, words, tokenizer)
    rng = random.Random(2)
    items = [train_instruct.policy_drill(rng, near, 0.4, crowd, bare_share=0.15) for _ in range(2000)]
    bare = [i for i in items if i.expected["banned"] is None]
    assert 0.1 < len(bare) / len(items) < 0.2 and all(i.reply.startswith(" Sure") for i in bare)
    assert not {i.expected["topic"] for i in items} & set(tasks.refusal_held_out_topics())
    in_crowd = [i for i in items if i.expected["banned"] in crowd and i.expected["topic"] in crowd]
    assert len(in_crowd) / len(items) > 0.35
    assert all(tasks.grade(i, i.reply) for i in items)
    # without a crowd, bare_share changes nothing: the first SFT part draws as it did before the crowd existed
    plain, with_share = random.Random(3), random.Random(3)
    assert ([train_instruct.policy_drill(plain, near, 0.4).message for _ in range(50)]
            == [train_instruct.policy_drill(with_share, near, 0.4, None, 0.5).message for _ in range(50)])


def test_the_decision_loss_scores_the_first_reply_token_only():
    """The rules phase weights the token where a reply decides (Sure or Sorry): the rule's whole signal is there."""
    import torch

    labels = torch.tensor([[-100, -100, 5, 6, 7], [-100, 3, 4, -100, -100]])
    logits = torch.zeros(2, 5, 10)
    logits[0, 1, 5] = logits[1, 0, 3] = 20.0  # each row's first reply token, predicted one position earlier
    assert train_instruct.decision_loss(logits, labels).item() < 1e-6
    logits[1, 0, 3] = 0.0
    assert abs(train_instruct.decision_loss(logits, labels).item() - torch.log(torch.tensor(10.0)).item() / 2) < 1e-4
    logits[0, 2, 6] = -50.0  # a later token of the reply does not count
    assert abs(train_instruct.decision_loss(logits, labels).item() - torch.log(torch.tensor(10.0)).item() / 2) < 1e-4
