"""Train a corpus-only lab MoE: a small Mixtral (8 experts, top-2) on the lab corpus, with the load-balancing loss.

    python -m nbhelpers.lab.train_moe --out outputs/lab-moe --seed 0

The shipped lab MoE (data/lab/mixtral*) comes from `nbhelpers.lab.train_instruct`, which reuses `encode` and the
routing measurements below; this script is the corpus-only recipe that preceded it (its routing specialised more
by language: 0.13-0.21 bits per layer), kept to compare against.

1. tokenizer: a byte-level BPE trained on the corpus, wrapped like Mixtral's (bos <s>, eos </s>, unk <unk>,
   pad </s>, the Mixtral chat template);
2. model: MixtralForCausalLM trained on packed documents; `output_router_logits=True` adds the Switch-style
   load-balancing loss times `router_aux_loss_coef`, which keeps every expert in use;
3. eval: routing structure per corpus kind (languages, code, chat) on documents never trained on, measured
   against the same tokens with their kind labels shuffled (what routing blind to the kind would give),
   plus a few chat answers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from nbhelpers import persist
from nbhelpers.lab.optimise import optimizer_step
from nbhelpers.lab import corpus

EVAL_SEED = 10_000  # evaluation documents come from another seed than training ones
QUESTIONS = ["What is 3 plus 4?", "What is the capital of France?", "What colour is the sky?",
             "Write a Python function that returns the sum of a and b.", "Combien font 2 plus 5 ?"]


def build_tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from nbhelpers.tiny import MIXTRAL_CHAT_TEMPLATE

    texts = [d["text"].replace("<s>", "").replace("</s>", "\n") for d in corpus.documents(7000, seed=seed)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="</s>", model_max_length=512)
    tokenizer.chat_template = MIXTRAL_CHAT_TEMPLATE
    return tokenizer


def encode(docs, tokenizer):
    """(token ids, kind index per token) of documents laid end to end; prose and code get <s> ... </s>."""
    ids, kinds = [], []
    for doc in docs:
        text = doc["text"] if doc["kind"] == "chat" else f"<s>{doc['text']}</s>"
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += tokens
        kinds += [corpus.KINDS.index(doc["kind"])] * len(tokens)
    return ids, kinds


def make_config(vocab_size: int, hidden: int, layers: int):
    from transformers import MixtralConfig

    return MixtralConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        router_aux_loss_coef=0.02, rope_theta=10000.0,
    )


def train(out: Path, seed: int, steps: int, batch: int, length: int, lr: float, hidden: int, layers: int):
    import torch
    from transformers import MixtralForCausalLM

    tokenizer = build_tokenizer(seed, vocab_size=1024)
    ids, _ = encode(corpus.documents(24000, seed=seed), tokenizer)
    data = torch.tensor(ids[: len(ids) // length * length]).view(-1, length)
    print(f"{len(ids)} training tokens in {len(data)} rows of {length}; vocab {len(tokenizer)}", flush=True)
    torch.manual_seed(seed)
    model = MixtralForCausalLM(make_config(len(tokenizer), hidden, layers))
    model.generation_config.pad_token_id = 2
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc="moe")
    for step in bar:
        rows = data[torch.randint(len(data), (batch,), generator=generator)]
        output = model(input_ids=rows, labels=rows, output_router_logits=True)
        optimizer_step(output.loss, optimizer, schedule, clip_params=model.parameters())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{output.loss.item():.3f}", aux=f"{output.aux_loss.item():.3f}")
            print(f"moe step {step} loss {output.loss.item():.4f} aux {output.aux_loss.item():.4f}", flush=True)
    model.eval()
    with persist.atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    print(f"saved {out}", flush=True)


def routing_counts(model, tokenizer, docs):
    """Per layer, a (kinds, experts) tensor counting top-2 choices, and the top-1 choice of every token."""
    import torch

    ids, kinds = encode(docs, tokenizer)
    kinds = torch.tensor(kinds)
    with torch.no_grad():
        logits = []
        for start in range(0, len(ids), 256):
            chunk = torch.tensor(ids[start:start + 256])[None]
            layers = model(input_ids=chunk, output_router_logits=True).router_logits
            logits.append(torch.stack([l.view(-1, l.shape[-1]) for l in layers]))
        logits = torch.cat(logits, dim=1)  # (layers, tokens, experts)
    top2 = logits.topk(2, dim=-1).indices
    experts = logits.shape[-1]
    counts = torch.zeros(logits.shape[0], len(corpus.KINDS), experts)
    for layer in range(logits.shape[0]):
        for k in range(2):
            counts[layer].index_put_((kinds, top2[layer, :, k]), torch.ones(len(kinds)), accumulate=True)
    return counts, top2[:, :, 0], kinds


def structure(top2_first, kinds, counts) -> dict:
    """Routing structure per layer: mean pairwise total-variation distance between the kinds' expert-usage
    distributions, and mutual information (bits) between kind and first expert."""
    import torch

    usage = counts / counts.sum(-1, keepdim=True)
    n = usage.shape[1]
    tv = [float(sum(0.5 * (usage[l, a] - usage[l, b]).abs().sum() for a in range(n) for b in range(a + 1, n))
                / (n * (n - 1) / 2)) for l in range(usage.shape[0])]
    mi = []
    for layer in range(top2_first.shape[0]):
        joint = torch.zeros(n, counts.shape[-1])
        joint.index_put_((kinds, top2_first[layer]), torch.ones(len(kinds)), accumulate=True)
        joint /= joint.sum()
        outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
        mask = joint > 0
        mi.append(float((joint[mask] * (joint[mask] / outer[mask]).log2()).sum()))
    return {"tv": [round(v, 4) for v in tv], "mi_bits": [round(v, 4) for v in mi]}


def routing_report(model, tokenizer, docs_per_kind: int = 40, seed: int = EVAL_SEED) -> dict:
    """Routing structure on held-out documents, against the same routing with the kind labels shuffled:
    what routing blind to the kind would score with this many tokens (uniform routing scores about that too)."""
    import torch

    docs = corpus.documents(docs_per_kind * len(corpus.KINDS), seed=seed)
    counts, first, kinds = routing_counts(model, tokenizer, docs)
    shuffled = kinds[torch.randperm(len(kinds), generator=torch.Generator().manual_seed(0))]
    measured = structure(first, kinds, counts)
    by_first = structure(first, kinds, _first_counts(first, kinds, counts.shape))
    blind = structure(first, shuffled, _first_counts(first, shuffled, counts.shape))
    return {"tokens": len(kinds), "kinds": list(corpus.KINDS), "tv_top2": measured["tv"], "tv_first": by_first["tv"],
            "tv_first_shuffled": blind["tv"], "mi_bits": measured["mi_bits"], "mi_bits_shuffled": blind["mi_bits"],
            "usage_top2": (counts / counts.sum(-1, keepdim=True)).round(decimals=3).tolist()}


def _first_counts(first, kinds, shape):
    import torch

    counts = torch.zeros(shape)
    for layer in range(shape[0]):
        counts[layer].index_put_((kinds, first[layer]), torch.ones(len(kinds)), accumulate=True)
    return counts


def answer(model, tokenizer, question: str, max_new_tokens: int = 40) -> str:
    """Greedy answer to one user turn, decoded up to and including </s>."""
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], return_dict=True,
                                        return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=2)
    return tokenizer.decode(out[0, ids.shape[1]:])


def evaluate(out: Path) -> dict:
    from transformers import AutoTokenizer, MixtralForCausalLM

    import torch

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = MixtralForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
    report = routing_report(model, tokenizer)
    report["answers"] = {q: answer(model, tokenizer, q) for q in QUESTIONS}
    ids, _ = encode(corpus.documents(140, seed=EVAL_SEED + 1), tokenizer)
    rows = torch.tensor(ids[: len(ids) // 128 * 128]).view(-1, 128)
    with torch.no_grad():
        report["eval_loss"] = round(float(model(input_ids=rows, labels=rows).loss), 4)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/lab-moe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.time()
    if not args.eval_only:
        train(out, args.seed, args.steps, args.batch, args.length, args.lr, args.hidden, args.layers)
    trained = time.time() - start
    report = evaluate(out)
    report["train_seconds"] = round(trained, 1)
    print(json.dumps({k: v for k, v in report.items() if k != "usage_top2"}, indent=1, ensure_ascii=False))
    persist.atomic_write_json(persist.nbhelpers_cache() / "lab-train" / "moe-report.json", report)


if __name__ == "__main__":
    main()
