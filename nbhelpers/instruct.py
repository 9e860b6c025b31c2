"""From a base model to an instruct model: supervised fine-tuning (SFT), then Direct Preference Optimization (DPO).

Mixtral-8x7B-Instruct was made this way: SFT on instruction data teaches the answer format, DPO on pairs of a
preferred and a rejected answer pushes the model towards the preferred kind. Both run here through `trl`, the
maintained library (no hand-written DPO loss), on the lab tasks (`nbhelpers.lab.tasks`):

    rows = sft_rows(200, seed=0)                  # prompt/completion conversations
    history = sft(model, tokenizer, rows, steps=60, learning_rate=1e-3)
    pairs = preference_pairs(120, seed=0)         # prompt, chosen, rejected
    history = dpo(model, tokenizer, pairs, steps=30, learning_rate=5e-5)

`lora_rank` > 0 trains a LoRA adapter on the attention projections (peft) instead of every weight: what fits a T4
for a real model. DPO's reference model is then the same model with the adapter switched off; otherwise a frozen
copy. The lab MoE's recipe (`nbhelpers.lab.train_instruct`) calls the same `preference_pairs` and `dpo`.
"""

from __future__ import annotations

import random
import tempfile

from nbhelpers import checks
from nbhelpers.lab import tasks

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # MoE experts are fused 3D tensors: peft leaves them


def _chat(message: str, reply: str) -> tuple[list, list]:
    return [{"role": "user", "content": message}], [{"role": "assistant", "content": reply}]


def sft_rows(n: int, seed: int = 0, recall_tokens: tuple[int, int] = (64, 256), tokenizer=None) -> list[dict]:
    """`n` training conversations over every lab task (recall messages of `recall_tokens` tokens, which needs the
    tokenizer to count them), in trl's prompt/completion form: the loss falls on the completion only."""
    checks.integer("n", n, minimum=1)
    rng = random.Random(f"sft-rows:{seed}")
    count = tasks.token_counter(tokenizer) if tokenizer is not None else None
    rows = []
    for i in range(n):
        task = tasks.TRAINING_TASKS[i % len(tasks.TRAINING_TASKS)]
        if task == "recall" and count is None:
            continue
        item = tasks.make(task, rng, tokens=rng.randint(*recall_tokens), count_tokens=count, spare_held_out=True)
        prompt, completion = _chat(item.message, item.reply)
        rows.append({"prompt": prompt, "completion": completion})
    return rows


def mistake(item: tasks.Instance, rng: random.Random) -> str | None:
    """A typical wrong reply to `item`: a false refusal or missing one, the other label, another operation, a
    translation into the wrong language, another passphrase (None where the task has no such mistake)."""
    vocab, e = tasks.vocabulary(), item.expected
    if item.task == "recall":
        return item.reply.replace(e["word"], tasks.letters(rng))
    if item.task in ("policy", "guardrail"):
        refused = item.reply.strip().startswith(tasks.REFUSAL)
        topic = e["topic"]
        if not refused:
            return f" {tasks.REFUSAL}, I cannot discuss {topic}." if item.task == "policy" else tasks.GUARDRAIL_REFUSAL
        return tasks.sure(topic)
    if item.task == "self_check":
        other = "safe" if e["label"] == "unsafe" else "unsafe"
        return item.reply.replace(f" {e['label']}:", f" {other}:", 1)
    if item.task == "code":
        other = rng.choice(sorted(o for o in vocab["operations"] if o != e["operation"]))
        return item.reply.replace(vocab["operations"][e["operation"]], vocab["operations"][other])
    word = item.message.rsplit(": ", 1)[1]
    others = sorted({t for t in vocab["lexicon"][word].values() if t.lower() != e["translation"].lower()})
    return item.reply.replace(f" is {e['translation']}.", f" is {rng.choice(others)}.") if others else None


def preference_pairs(n: int, seed: int = 0, recall_tokens: tuple[int, int] = (64, 256), tokenizer=None) -> list[dict]:
    """`n` (prompt, chosen, rejected) conversations: the reference reply against a typical mistake."""
    checks.integer("n", n, minimum=1)
    rng = random.Random(f"dpo-pairs:{seed}")
    count = tasks.token_counter(tokenizer) if tokenizer is not None else None
    names = [t for t in tasks.TRAINING_TASKS if t != "recall" or count is not None]
    pairs = []
    while len(pairs) < n:
        name = names[len(pairs) % len(names)]
        # most requests are allowed: a pair set with as many refusals teaches the trained topics' refusals by heart
        form = rng.choices(("bare", "same", "other"), (15, 25, 60))[0]
        item = (tasks.policy(rng, form=form, spare_held_out=True) if name == "policy" else
                tasks.make(name, rng, tokens=rng.randint(*recall_tokens), count_tokens=count))
        wrong = mistake(item, rng)
        if wrong is not None and wrong != item.reply:
            prompt, chosen = _chat(item.message, item.reply)
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": _chat(item.message, wrong)[1]})
    return pairs


def _common(steps: int, learning_rate: float, batch_size: int, seed: int, scratch: str, fp16: bool) -> dict:
    checks.integer("steps", steps, minimum=1)
    checks.number("learning_rate", learning_rate, minimum=0.0, maximum=1.0)
    checks.integer("batch_size", batch_size, minimum=1)
    import torch

    on_cpu = not torch.cuda.is_available()
    # trl defaults to bf16 autocast and activation checkpointing. On a CPU both only cost time for a model this
    # small (10 SFT steps of the lab model, measured: 2-3x slower with both), so the CPU trains in float32 and
    # keeps its activations.
    cpu = dict(bf16=False, gradient_checkpointing=False) if on_cpu else {}
    return dict(output_dir=scratch, per_device_train_batch_size=batch_size, max_steps=steps,
                learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 10),
                logging_steps=max(1, steps // 20), save_strategy="no", report_to=[], seed=seed,
                use_cpu=on_cpu, fp16=fp16, dataloader_num_workers=0, **cpu)


def _lora(rank: int):
    checks.integer("lora_rank", rank, minimum=0)
    if rank == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")


def sft(model, tokenizer, rows: list[dict], steps: int, learning_rate: float, batch_size: int = 8, seed: int = 0,
        lora_rank: int = 0, fp16: bool = False, max_length: int = 1280):
    """trl's SFTTrainer on prompt/completion rows; returns (trained model, trl's log history)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory(prefix="sft-") as scratch:
        config = SFTConfig(**_common(steps, learning_rate, batch_size, seed, scratch, fp16), max_length=max_length,
                           completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=_lora(lora_rank))
        trainer.train()
    return trainer.model.eval(), trainer.state.log_history


def dpo(model, tokenizer, pairs: list[dict], steps: int, learning_rate: float, beta: float = 0.1,
        batch_size: int = 8, seed: int = 0, lora_rank: int = 0, fp16: bool = False, max_length: int = 1280):
    """trl's DPOTrainer: the sigmoid DPO loss against a frozen reference; returns (model, trl's log history)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    checks.number("beta", beta, minimum=0.0, maximum=10.0)
    with tempfile.TemporaryDirectory(prefix="dpo-") as scratch:
        config = DPOConfig(**_common(steps, learning_rate, batch_size, seed, scratch, fp16), beta=beta,
                           max_length=max_length)
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs),
                             processing_class=tokenizer, peft_config=_lora(lora_rank))
        trainer.train()
    return trainer.model.eval(), trainer.state.log_history


def curves(history: list[dict], keys: tuple[str, ...]) -> dict:
    """{key: ([steps], [values])} from trl's log history, for the keys that were logged."""
    found = {}
    for record in history:
        for key in keys:
            if key in record:
                found.setdefault(key, ([], []))
                found[key][0].append(record["step"])
                found[key][1].append(record[key])
    return found


def plot_training(sft_history: list[dict], dpo_history: list[dict]):
    """Three panels: SFT loss; DPO reward margin; the log-probabilities of chosen and rejected replies."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    panels = [(curves(sft_history, ("loss",)), "SFT loss (completion tokens)"),
              (curves(dpo_history, ("rewards/margins",)), "DPO reward margin (chosen - rejected)"),
              (curves(dpo_history, ("logps/chosen", "logps/rejected")), "log-prob of the reply")]
    for ax, (found, title) in zip(axes, panels):
        for key, (steps, values) in found.items():
            ax.plot(steps, values, marker="o", label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def score_table(models: dict, tokenizer, items: list) -> list[dict]:
    """Held-out task rates per model: one table row each, with the mean over tasks."""
    rows = []
    for name, model in models.items():
        rates = tasks.score(model, tokenizer, items)["rates"]
        rows.append({"model": name, **rates, "mean": round(sum(rates.values()) / len(rates), 3)})
    return rows


def examples(seed: int = 0) -> list[dict]:
    """One message and reference reply per short task (recall's thousand tokens do not fit a table)."""
    rng = random.Random(f"examples:{seed}")
    return [{"task": item.task, "message": item.message, "reference reply": item.reply}
            for item in (tasks.make(task, rng) for task in tasks.TRAINING_TASKS if task != "recall")]


def side_by_side(models: dict, tokenizer, items: list, per_task: int = 1) -> list[dict]:
    """The first `per_task` held-out messages of every task, each model's reply beside the others."""
    rows, seen = [], {}
    for item in items:
        seen[item.task] = seen.get(item.task, 0) + 1
        if seen[item.task] > per_task:
            continue
        row = {"task": item.task, "message (end)": item.message[-70:]}
        for name, model in models.items():
            answer = tasks.reply(model, tokenizer, item.message)
            row[name] = ("✓ " if tasks.grade(item, answer) else "✗ ") + answer.strip()[:90]
        rows.append(row)
    return rows


def outcomes(rows: list[dict], sft_history: list[dict], dpo_history: list[dict]) -> dict:
    """What summary.json records: task rates per stage, the SFT loss at both ends, DPO margins and log-probs."""
    loss = curves(sft_history, ("loss",)).get("loss", ([], []))[1]
    dpo = curves(dpo_history, ("rewards/margins", "logps/chosen", "logps/rejected"))
    return {"task_scores": {row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows},
            "stages": [row["model"] for row in rows],
            "sft_loss": {"first": loss[0], "last": loss[-1]} if loss else {},
            "dpo": {key.replace("/", "_"): values for key, (_, values) in dpo.items()}}
