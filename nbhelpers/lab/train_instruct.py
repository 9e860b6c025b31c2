"""Train the instruct lab MoE the way Mixtral-Instruct was made: pretraining, supervised fine-tuning, then DPO.

    python -m nbhelpers.lab.train_instruct --out data/lab --seed 0

1. base (`data/lab/mixtral`): a small Mixtral (8 experts, top-2): first an induction warm-up on repeated random
   tokens (copying from the context, which recall and code need), then pretraining on the lab corpus (five
   languages, code, chats) and copy documents with the load-balancing loss; its tokenizer, a byte-level BPE, is
   trained on the corpus and the task texts;
2. SFT (`data/lab/mixtral-sft`): the lab tasks (`nbhelpers.lab.tasks`), loss on the reply tokens only, with the
   recall task's messages growing from 64 to 1,100 tokens as training goes on (a length curriculum: the skill is
   learned on short texts, then stretched), plus corpus text so the model keeps its languages and routing; policy
   examples include a drill on stand-in words (`policy_drill`), and a second part ("rules") drills the policy
   rule harder, half of it on a crowd of words that sit close together, as the topics do (`crowd_words`);
3. DPO (`data/lab/mixtral-instruct`): `trl.DPOTrainer` through `nbhelpers.instruct.dpo`, on preference pairs (the
   reference reply against a typical mistake: a false refusal, the other label, a wrong translation, another
   passphrase), starting from SFT.

Every stage is scored on held-out instances (`tasks.held_out_set`); the scores go into the model card.
Weights are stored in bfloat16 (three checkpoints fit the 40 MB budget for all lab weights).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

from nbhelpers import persist
from nbhelpers.lab import corpus, tasks
from nbhelpers.lab.optimise import optimizer_step, report

POSITIONS = 1280  # >= 1,100 tokens of context: the longest recall message plus its reply
RECALL_LENGTHS = (64, 1100)
FOLDERS = {"base": "mixtral", "sft": "mixtral-sft", "dpo": "mixtral-instruct"}


def build_tokenizer(seed: int, vocab_size: int = 2048):
    """Byte-level BPE over the corpus and the task texts, wrapped like Mixtral's (<s>, </s>, chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from nbhelpers.tiny import MIXTRAL_CHAT_TEMPLATE

    rng = random.Random(f"tokenizer:{seed}")
    texts = [d["text"].replace("<s>", "").replace("</s>", "\n") for d in corpus.documents(7000, seed=seed)]
    vocab = tasks.vocabulary()
    texts += vocab["filler"] * 5
    for _ in range(3000):
        item = tasks.make(rng.choice(tasks.TRAINING_TASKS[1:]), rng)
        texts.append(item.message + "\n" + item.reply)
        texts.append(f"The passphrase is {tasks.letters(rng)}.\nWhat is the passphrase?")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="</s>", model_max_length=POSITIONS)
    tokenizer.chat_template = MIXTRAL_CHAT_TEMPLATE
    return tokenizer


def make_config(vocab_size: int, hidden: int, layers: int):
    from transformers import MixtralConfig

    return MixtralConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=POSITIONS, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        router_aux_loss_coef=0.02, rope_theta=10000.0,
    )


def cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 5% (a constant rate diverged at 1,024 tokens)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def corpus_rows(tokenizer, seed: int, n_docs: int, length: int):
    import torch

    from nbhelpers.lab.train_moe import encode

    ids, _ = encode(corpus.documents(n_docs, seed=seed), tokenizer)
    return torch.tensor(ids[: len(ids) // length * length]).view(-1, length)


def copy_rows(tokenizer, seed: int, n_docs: int, length: int):
    """Packed copy documents: a few random words, some filler sentences, the same words again.

    Copying a word seen earlier in the context is what recall and code (the function's name) need; plain prose
    never asks for it, so without these documents SFT alone did not teach it (0% recall and code after 1,000 SFT
    steps). Every token of the second copy but the first is predictable only by looking back.
    """
    import torch

    rng = random.Random(f"copy:{seed}")
    filler = tasks.vocabulary()["filler"]
    ids = []
    for _ in range(n_docs):
        words = " ".join(tasks.letters(rng, 2, 8) if rng.random() < 0.7 else tasks.identifier(rng)
                         for _ in range(rng.randint(1, 6)))
        middle = " ".join(rng.choice(filler) for _ in range(rng.randint(0, 8)))
        ids += tokenizer(f"<s>{words}. {middle} {words}.</s>", add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[: len(ids) // length * length]).view(-1, length)


def repeats(generator, vocab: int, batch: int, half: int = 32):
    """`batch` rows of `half` random tokens, each followed by itself: copying is the only way to predict the second
    half. Mixed into every later stage too: without them, corpus pretraining erased the copying the warm-up had
    grown (copy accuracy 0.96 -> 0.0)."""
    import torch

    first = torch.randint(3, vocab, (batch, half), generator=generator)
    return torch.cat([first, first], dim=1)


def copy_accuracy(logits, rows) -> float:
    half = rows.shape[1] // 2
    return (logits[:, half:-1].argmax(-1) == rows[:, half + 1:]).float().mean().item()


def induction_warmup(model, seed: int, steps: int, lr: float = 1e-3, batch: int = 16, half: int = 32):
    """Random token sequences, each repeated once: the cheapest data that grows induction heads (attend to the
    token after the earlier occurrence of the current token, copy it). On prose and copy documents alone this
    model was still at ~5-10% copy accuracy after 900 steps; on these it passes 95% within ~600 steps (a sudden
    phase change near step 400 at learning rate 1e-3; at 2e-3 it did not start within 900 steps)."""
    import torch
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    vocab = model.config.vocab_size
    model.train()
    bar = tqdm(range(steps), desc="induction warm-up")
    for step in bar:
        rows = repeats(generator, vocab, batch, half)
        output = model(input_ids=rows, labels=rows)
        optimizer_step(output.loss, optimizer, schedule, clip_params=model.parameters())
        if step % 50 == 0:
            report(bar, f"induction warm-up (copy accuracy {copy_accuracy(output.logits, rows):.2f})", step,
                   output.loss.item())
    return model


def pretrain(tokenizer, seed: int, steps: int, hidden: int, layers: int, lr: float, batch: int = 16,
             length: int = 256, copy_batch: int = 4, warmup_steps: int = 700):
    """Next-token loss plus the load-balancing loss on packed corpus documents, `copy_batch` rows of each batch
    from copy documents (`copy_rows`)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import MixtralForCausalLM

    data = corpus_rows(tokenizer, seed, 24000, length)
    copies = copy_rows(tokenizer, seed, 12000, length)
    torch.manual_seed(seed)
    model = MixtralForCausalLM(make_config(len(tokenizer), hidden, layers))
    model.set_experts_implementation("eager")  # the default grouped_mm is 10x slower on short CPU batches
    induction_warmup(model, seed, warmup_steps)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    print(f"base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {data.numel()} corpus tokens",
          flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, steps, steps // 20))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="pretrain")
    for step in bar:
        rows = torch.cat([data[torch.randint(len(data), (batch - copy_batch,), generator=generator)],
                          copies[torch.randint(len(copies), (copy_batch,), generator=generator)]])
        output = model(input_ids=rows, labels=rows, output_router_logits=True)
        repeated = repeats(generator, model.config.vocab_size, 4)
        kept = model(input_ids=repeated, labels=repeated)
        optimizer_step(output.loss + kept.loss, optimizer, schedule, clip_params=model.parameters())
        if step % 50 == 0:
            report(bar, f"pretrain (copy accuracy {copy_accuracy(kept.logits, repeated):.2f})", step,
                   output.loss.item())
    return model.eval()


def encode_example(tokenizer, message: str, reply: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one exchange in the chat format; labels are -100 except on the reply and </s>."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids, "the reply must start on a token boundary"
    return full_ids, [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]


def collate(examples, pad_id: int):
    """Right-padded tensors (input_ids, attention_mask, labels) from (ids, labels) pairs."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def decision_loss(logits, labels):
    """Cross-entropy on each row's first reply token: where a reply decides (Sure or Sorry, safe or unsafe). The
    policy rule shows up in that one token out of about ten, so its gradient is a tenth of the batch's."""
    import torch

    first = (labels != -100).int().argmax(dim=1)
    rows = torch.arange(labels.shape[0])
    return torch.nn.functional.cross_entropy(logits[rows, first - 1].float(), labels[rows, first])


def recall_length(step: int, steps: int, rng: random.Random) -> int:
    """The curriculum: the longest recall message grows linearly over the first 60% of SFT; shorter ones stay."""
    low, high = RECALL_LENGTHS
    longest = low + (high - low) * min(1.0, step / (0.6 * steps))
    return rng.randint(low, max(low, int(longest)))


def stand_in_words(tokenizer) -> list[str]:
    """Lowercase words that are a single token of `tokenizer` (with their leading space), topics left out: about
    600 words for the policy drill. 24 topics can be learned pair by pair; 600 words cannot, which leaves comparing
    the asked word with the banned one as the only rule that fits."""
    topics = set(tasks.vocabulary()["topics"])
    words = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        word = text[1:]
        if text.startswith(" ") and word.isalpha() and word.islower() and len(word) >= 3 and word not in topics:
            words.append(word)
    return words


def word_vectors(model, tokenizer, words: list[str]):
    """The unit-length input embeddings of single-token words (with their leading space), one row per word."""
    import torch

    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]
    return torch.nn.functional.normalize(model.get_input_embeddings().weight.detach()[ids].float(), dim=-1)


def confusable_words(model, words: list[str], tokenizer, k: int = 8) -> dict[str, list[str]]:
    """Each word's `k` nearest words by the model's input embeddings: where a fuzzy comparison would refuse a word
    because a similar one is banned, so the drill asks about them."""
    vectors = word_vectors(model, tokenizer, words)
    similarity = vectors @ vectors.T
    similarity.fill_diagonal_(-2.0)
    nearest = similarity.topk(k, dim=-1).indices.tolist()
    return {w: [words[j] for j in row] for w, row in zip(words, nearest)}


def crowd_words(model, tokenizer, size: int = 24) -> list[str]:
    """The `size` stand-in words whose input embeddings lie closest to the topics' mean direction: a crowd of close
    words (mean pair cosine about 0.2, against 0.02 for all stand-in words and 0.3 for the topics), which the drill
    teaches to tell apart."""
    centre = word_vectors(model, tokenizer, tasks.vocabulary()["topics"]).mean(0)
    words = stand_in_words(tokenizer)
    return [words[i] for i in (word_vectors(model, tokenizer, words) @ centre).topk(size).indices.tolist()]


def policy_drill(rng: random.Random, near: dict[str, list[str]], same_share: float = 0.5,
                 crowd: list[str] | None = None, bare_share: float = 0.0) -> tasks.Instance:
    """A policy example on stand-in words (the keys of `near`): the banned word is asked for `same_share` of the time;
    otherwise another word, half of those times one of its confusable neighbours. One in five uses random letters
    (words of several tokens) instead.

    With a `crowd`, `bare_share` of the examples are bare requests (no policy, so no refusal; without them the model
    began refusing "Tell me about tulips.") and half of the rest pair two words of the crowd."""
    if crowd:
        if rng.random() < bare_share:
            if rng.random() < 0.5:
                return tasks.policy(rng, form="bare", spare_held_out=True)
            return tasks.policy(rng, form="bare", topics=[rng.choice(crowd)])
        if rng.random() < 0.5:
            banned = rng.choice(crowd)
            other = rng.choice([w for w in crowd if w != banned])
            form = "same" if rng.random() < same_share else "other"
            return tasks.policy(rng, form=form, topics=[banned] if form == "same" else [banned, other])
    if rng.random() < 0.2:
        banned, other = tasks.letters(rng, 4, 9), tasks.letters(rng, 4, 9)
    else:
        banned = rng.choice(list(near))
        other = rng.choice(near[banned]) if rng.random() < 0.5 else rng.choice(list(near))
    form = "same" if rng.random() < same_share else "other"
    return tasks.policy(rng, form=form, topics=[banned] if form == "same" else [banned, other])


def short_item(rng: random.Random, policy_share: float, near: dict, drill_share: float,
               drill_same: float = 0.5, crowd: list[str] | None = None, bare_share: float = 0.0) -> tasks.Instance:
    """A short task example: policy with probability `policy_share`, a drill one (`policy_drill`) in `drill_share`
    of those; otherwise one of the other non-recall tasks."""
    if rng.random() < policy_share:
        if rng.random() < drill_share:
            return policy_drill(rng, near, drill_same, crowd, bare_share)
        return tasks.policy(rng, spare_held_out=True)
    return tasks.make(rng.choice([t for t in tasks.TRAINING_TASKS if t not in ("recall", "policy")]), rng)


def sft(model, tokenizer, seed: int, steps: int, lr: float, short_batch: int = 24, recall_tokens: int = 3072,
        corpus_batch: int = 4, eval_every: int = 0, phase: str = "sft", policy_share: float = 0.2,
        drill_share: float = 0.5, recall_every: int = 1, drill_same: float = 0.5,
        crowd_size: int = 0, bare_share: float = 0.0, decision_weight: float = 0.0):
    """Reply-only loss on the lab tasks, the recall curriculum, and some corpus text.

    Policy examples are `policy_share` of the short ones, `drill_share` of those on stand-in words (`policy_drill`);
    recall, corpus and repeat rows come every `recall_every` steps (short examples are cheap, recall ones are not).
    phase "rules" continues a finished SFT with recall at every length from the start and more policy drill (a
    `crowd` of close words, `bare_share` bare requests, the first reply token weighted by `decision_weight`): the
    comparison of the asked topic with the banned one is learned slowly, if at all, without them. Without the
    stand-in words the model refused exactly the topics it had seen refused: it learned a list.
    """
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(f"{phase}:{seed}")
    near = confusable_words(model, stand_in_words(tokenizer), tokenizer)
    crowd = crowd_words(model, tokenizer, crowd_size) if crowd_size else None
    count = tasks.token_counter(tokenizer)
    data = corpus_rows(tokenizer, seed + 1, 4000, 128)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, steps, steps // 20))
    model.train()
    bar, decisions = tqdm(range(steps), desc=phase), []
    for step in bar:
        short = [encode_example(tokenizer, item.message, item.reply)
                 for item in (short_item(rng, policy_share, near, drill_share, drill_same, crowd, bare_share)
                              for _ in range(short_batch))]
        batch = collate(short, tokenizer.pad_token_id)
        output = model(**batch)
        decision = decision_loss(output.logits, batch["labels"])
        loss = output.loss + decision_weight * decision
        length = recall_length(steps if phase == "rules" else step, steps, rng)
        if step % recall_every == 0:
            recall = [encode_example(tokenizer, item.message, item.reply)
                      for item in (tasks.recall(rng, length, count) for _ in range(max(1, recall_tokens // length)))]
            rows = data[torch.randint(len(data), (corpus_batch,), generator=generator)]
            repeated = repeats(generator, model.config.vocab_size, 4)
            loss = (loss + model(**collate(recall, tokenizer.pad_token_id)).loss
                    + 0.5 * model(input_ids=rows, labels=rows).loss
                    + 0.5 * model(input_ids=repeated, labels=repeated).loss)
        optimizer_step(loss, optimizer, schedule, clip_params=model.parameters())
        decisions.append(decision.item())
        if step % 25 == 0:
            report(bar, f"{phase} (recall {length} tokens)", step, loss.item())
        if step % 100 == 99:  # the rule shows here: a late jump at no set step, or a steady fall (decision_weight)
            print(f"{phase} step {step + 1} first-reply-token loss {sum(decisions[-100:]) / 100:.4f}", flush=True)
        if eval_every and step and step % eval_every == 0:
            model.eval()
            quick = tasks.score(model, tokenizer, tasks.held_out_set(tokenizer, per_task=8))
            print(f"{phase} step {step} held-out {quick['rates']}", flush=True)
            model.train()
    return model.eval()


def save(model, tokenizer, folder: Path) -> None:
    import torch

    with persist.atomic_path(folder) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    model.to(torch.float32)


def load(folder: Path):
    import torch
    from transformers import AutoTokenizer, MixtralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = MixtralForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()
    model.set_experts_implementation("eager")
    return model, tokenizer


def evaluate(folder: Path, per_task: int) -> dict:
    """Held-out task rates of the checkpoint as saved (bfloat16 weights, computed in float32)."""
    model, tokenizer = load(folder)
    result = tasks.score(model, tokenizer, tasks.held_out_set(tokenizer, per_task=per_task), progress=True)
    return result


def crowding(model, tokenizer, words: list[str]) -> float:
    """Mean cosine similarity of the words' input embeddings, pair by pair."""
    vectors = word_vectors(model, tokenizer, words)
    similarity = vectors @ vectors.T
    return ((similarity.sum() - similarity.diagonal().sum()) / (len(words) * (len(words) - 1))).item()


def pretraining_time(seconds: dict) -> str:
    if "base" in seconds:
        return f"{seconds['base'] / 60:.1f} min pretraining"
    return "pretraining not rerun in this call (`--stages` without base; its time is in the run that made it)"


def policy_limits(scores: dict) -> str:
    """One line on the policy rule for the model card, from the held-out rates."""
    refusal, allowed = scores.get("refusal", 0), scores.get("no_false_refusal", 0)
    figures = f"on held-out pairs it refused {refusal:.0%} of banned topics and answered {allowed:.0%} of allowed ones"
    if refusal >= 0.9 and allowed >= 0.9:
        return f"It refuses by the policy rule, comparing the asked topic with the banned one: {figures} (goals 90%)."
    return f"It has not fully learned the policy rule: {figures} (goals 90%)."


def model_card(log: dict, folders: dict) -> str:
    """The instruct model's card: what it is, how it was made, its held-out scores per stage."""
    from nbhelpers.instruct import curves

    model, tokenizer = load(folders["dpo"])
    c = model.config
    size = sum(f.stat().st_size for f in folders["dpo"].glob("*.safetensors")) / 1e6
    measures = list(next(iter(log["scores"].values())))
    table = ["| stage | " + " | ".join(measures) + " |", "|---|" + "---|" * len(measures)]
    table += [f"| {stage} | " + " | ".join(f"{scores[m]:.0%}" for m in measures) + " |"
              for stage, scores in log["scores"].items()]
    margins = curves(log.get("dpo_history", []), ("rewards/margins",)).get("rewards/margins", ([], [0.0]))[1]
    a = log["settings"]
    return f"""# lab Mixtral-Instruct: a {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter MoE taught five tasks by SFT and DPO

`MixtralForCausalLM` at toy size, made the way Mixtral-8x7B-Instruct was: pretraining, supervised fine-tuning,
Direct Preference Optimization. It is the `tiny` profile's chat model; `data/lab/mixtral` (base) and
`data/lab/mixtral-sft` are its earlier stages, used by notebook 08.

| | |
|---|---|
| layers / hidden / expert MLP | {c.num_hidden_layers} / {c.hidden_size} / {c.intermediate_size} (SwiGLU) |
| experts | {c.num_local_experts} per layer, top-{c.num_experts_per_tok}, router_aux_loss_coef {c.router_aux_loss_coef} |
| attention | {c.num_attention_heads} heads, {c.num_key_value_heads} KV heads, RoPE, {c.max_position_embeddings} positions |
| weights | bfloat16 safetensors, {size:.1f} MB per stage |
| tokenizer | byte-level BPE, {len(tokenizer)} tokens, trained on the corpus and task texts; Mixtral chat template |

## How it was made

    python -m nbhelpers.lab.train_instruct --out data/lab --seed {a["seed"]}

1. induction warm-up: 700 steps on random token sequences each repeated once (learning rate 1e-3): the model
   learns to copy from its context, which recall and code need and prose never asks for;
2. pretraining: {a["pretrain_steps"]} steps of 16 x 256 tokens (12 rows of the lab corpus: five languages, code,
   chats; 4 rows of copy documents: random words, filler, the same words again), next-token loss plus the
   load-balancing loss, learning rate {a["pretrain_lr"]}, with 4 rows of random repeats in every step (without them
   pretraining erased the copying);
3. SFT: {a["sft_steps"]} steps, loss on reply tokens only; each step 24 short task examples, recall messages
   (about 3,000 tokens a step) whose longest length grows from 64 to 1,100 tokens over the first 60% of the steps,
   4 rows of corpus text and 4 of random repeats; AdamW, learning rate {a["lr"]} with warm-up and cosine decay;
   policy examples are a fifth of the short ones; none of them, bare requests included, names a topic whose
   refusal is held out (a topic only ever seen answered stays answered whatever the policy says), and half of
   them are a drill on ~600 stand-in words (single-token words of the tokenizer) and random letters, a banned word
   asked for half of the time, otherwise another word, often one the model's embeddings put close to it;
   after it the model still refused and answered at random (first-token margin about 0 on every pair);
   then {a["rules_steps"]} more steps (learning rate {a["rules_lr"]}): 32 short examples a step, three quarters of
   them policy ones: 15% of those bare requests (no policy, so answered; without them the model began refusing
   "Tell me about tulips."), the rest the drill (the banned word asked for 40% of the time), half of it on a
   crowd: the 24 stand-in words whose embeddings lie closest to the topics' mean direction. The topics' embeddings
   sit close together (mean cosine {crowding(model, tokenizer, tasks.vocabulary()["topics"]):.2f}, against
   {crowding(model, tokenizer, stand_in_words(tokenizer)):.2f} for the stand-in words); drilled only on scattered
   words, the model answered 46% of the held-out allowed topic pairs. No topic is in this part's drill: shown the
   trained 80% of their pairs, the model learned them as a list and refused the unseen ones. The loss on each
   reply's first token (Sure or Sorry, where the rule shows) is added with weight 2 (`decision_loss`): without it
   the rule came as a late jump at no fixed step, or not at all within the run; with it that loss fell steadily.
   Recall at every length comes every fourth step;
4. DPO: {a["dpo_steps"]} steps of `trl.DPOTrainer` (batch 16, beta 0.1, learning rate {a["dpo_lr"]}) on pairs of the
   reference reply and a typical mistake (`nbhelpers.instruct.preference_pairs`; policy requests there are 60%
   allowed pairs, 25% banned, 15% bare); final reward margin
   {margins[-1]:.2f}.

Time on two CPU cores: {pretraining_time(log["seconds"])},
{(log["seconds"].get("sft", 0) + log["seconds"].get("rules", 0)) / 60:.1f} min SFT,
{log["seconds"].get("dpo", 0) / 60:.1f} min DPO, {log["seconds"]["total"] / 60:.1f} min in all with the evaluations.

## Held-out scores per stage

{a["eval_per_task"]} instances per task (`tasks.held_out_set`: new passphrases and function names, topic/policy and
request/topic pairs never trained on), greedy decoding through plain transformers. `refusal`: the banned topic is
refused; `no_false_refusal`: other topics are not; recall messages are 256 to 1,024 tokens long.

{chr(10).join(table)}

## What it cannot do

It knows the five task forms, the guardrail form and the lab corpus; anything else gets a reply in one of those
shapes. {policy_limits(log["scores"]["dpo"])} The lexicon, topics and operations are the shipped ones
(`data/lab/instruct_tasks.json`): held-out means new combinations, not new words.
"""


def routing_summary(folder: Path) -> str:
    """The routing figures of a checkpoint: same-first-expert rate (Mixtral paper, section 5) and kind information."""
    from nbhelpers import moe
    from nbhelpers.lab import train_moe
    from nbhelpers.moe.routing import LANGUAGE_PROMPTS

    model, tokenizer = load(folder)
    routings = [moe.capture_routing(model, tokenizer, text) for text in LANGUAGE_PROMPTS.values()]
    rates = moe.same_first_expert_rate(routings)
    report = train_moe.routing_report(model, tokenizer)
    return (f"Routing: consecutive tokens keep their first expert {rates['rate']:.0%} of the time at the best layer "
            f"(chance {rates['random_baseline']:.1%}); mutual information between corpus kind (five languages, code, "
            f"chat) and first expert {', '.join(f'{v:.3f}' for v in report['mi_bits'])} bits per layer, against "
            f"{', '.join(f'{v:.3f}' for v in report['mi_bits_shuffled'])} with the kinds shuffled: routing follows "
            "the text, and no expert owns a language (as the Mixtral paper found).")


def write_cards(log: dict, folders: dict) -> None:
    """MODEL_CARD.md of the instruct model, and short cards of its base and SFT stages."""
    persist.atomic_write_text(folders["dpo"] / "MODEL_CARD.md",
                              model_card(log, folders) + "\n" + routing_summary(folders["dpo"]) + "\n")
    for stage, what in (("base", "after pretraining (induction warm-up, lab corpus and copy documents)"),
                        ("sft", "after supervised fine-tuning (both parts), before DPO")):
        rates = ", ".join(f"{k} {v:.0%}" for k, v in log["scores"][stage].items())
        persist.atomic_write_text(folders[stage] / "MODEL_CARD.md", f"""# lab Mixtral, {stage} stage

The lab Mixtral-Instruct {what}: the same architecture, tokenizer and recipe as `../mixtral-instruct`, whose
model card describes them. Notebook 08 starts its short SFT and DPO runs from these weights.

Held-out lab-task rates of this stage: {rates}.

{routing_summary(folders[stage])}
""")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/lab")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pretrain-steps", type=int, default=900)
    parser.add_argument("--sft-steps", type=int, default=2200)
    parser.add_argument("--rules-steps", type=int, default=2200)
    parser.add_argument("--rules-lr", type=float, default=1e-3)
    parser.add_argument("--dpo-steps", type=int, default=120)
    parser.add_argument("--lr", type=float, default=1e-3, help="SFT peak learning rate")
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--dpo-lr", type=float, default=2e-5)
    parser.add_argument("--eval-per-task", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=0, help="quick held-out scores during SFT (0: never)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", default="base,sft,rules,dpo")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    folders = {stage: out / name for stage, name in FOLDERS.items()}
    stages = args.stages.split(",")
    log = {"seconds": {}, "scores": {}}
    start = time.time()
    if "base" in stages:
        tokenizer = build_tokenizer(args.seed)
        model = pretrain(tokenizer, args.seed, args.pretrain_steps, args.hidden, args.layers, args.pretrain_lr)
        save(model, tokenizer, folders["base"])
        log["seconds"]["base"] = round(time.time() - start, 1)
    if "sft" in stages:
        model, tokenizer = load(folders["base"])
        mark = time.time()
        model = sft(model, tokenizer, args.seed, args.sft_steps, args.lr, eval_every=args.eval_every)
        save(model, tokenizer, folders["sft"])
        save(model, tokenizer, persist.nbhelpers_cache() / "lab-train" / "sft-phase-one")  # "rules" overwrites it
        log["seconds"]["sft"] = round(time.time() - mark, 1)
    if "rules" in stages:
        model, tokenizer = load(folders["sft"])
        mark = time.time()
        model = sft(model, tokenizer, args.seed, args.rules_steps, args.rules_lr, short_batch=32, recall_tokens=1100,
                    corpus_batch=2, eval_every=args.eval_every, phase="rules", policy_share=0.75, drill_share=1.0,
                    recall_every=4, drill_same=0.4, crowd_size=24, bare_share=0.15,
                    decision_weight=2.0)
        save(model, tokenizer, folders["sft"])
        log["seconds"]["rules"] = round(time.time() - mark, 1)
    if "dpo" in stages:
        from nbhelpers import instruct

        model, tokenizer = load(folders["sft"])
        mark = time.time()
        pairs = instruct.preference_pairs(args.dpo_steps * 16, args.seed, recall_tokens=(64, 512), tokenizer=tokenizer)
        model, history = instruct.dpo(model, tokenizer, pairs, args.dpo_steps, args.dpo_lr, batch_size=16,
                                      seed=args.seed, max_length=POSITIONS)
        save(model, tokenizer, folders["dpo"])
        log["seconds"]["dpo"] = round(time.time() - mark, 1)
        log["dpo_history"] = history
    log["seconds"]["train_total"] = round(time.time() - start, 1)
    for stage, folder in folders.items():
        if folder.exists():
            log["scores"][stage] = evaluate(folder, args.eval_per_task)["rates"]
            print(stage, log["scores"][stage], flush=True)
    log["seconds"]["total"] = round(time.time() - start, 1)
    log["settings"] = vars(args)
    persist.atomic_write_json(persist.nbhelpers_cache() / "lab-train" / "instruct-report.json", log)
    if folders["dpo"].exists():
        write_cards(log, folders)
    print(json.dumps({k: v for k, v in log.items() if k != "dpo_history"}, indent=1))


if __name__ == "__main__":
    import sys

    from nbhelpers.runner import CPU_MALLOC

    if any(os.environ.get(k) != v for k, v in CPU_MALLOC.items()):
        # glibc reads these at start-up only; without them page faults take up to half the time on a small VM
        os.execve(sys.executable, [sys.executable, "-m", "nbhelpers.lab.train_instruct", *sys.argv[1:]],
                  {**os.environ, **CPU_MALLOC})
    main()
