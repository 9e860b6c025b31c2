"""Issue 13 experiment: drill phase with recall replay from the shipped SFT, then DPO; held-out scores at each step."""
import argparse, json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from probe import margins, auc
from nbhelpers.lab import train_instruct as ti, tasks
from nbhelpers import instruct

p = argparse.ArgumentParser()
p.add_argument("--start", default="data/lab/mixtral-sft")
p.add_argument("--out", default="outputs/issue13-drill")
p.add_argument("--steps", type=int, default=1500); p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--policy", type=float, default=0.5); p.add_argument("--drill", type=float, default=0.7)
p.add_argument("--recall-every", type=int, default=4); p.add_argument("--dpo-steps", type=int, default=120)
p.add_argument("--dpo-lr", type=float, default=5e-5); p.add_argument("--per-task", type=int, default=40)
p.add_argument("--stages", default="rules,dpo")
p.add_argument("--freeze-embed", action="store_true")
a = p.parse_args()
torch.set_num_threads(2)
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
V = tasks.vocabulary()["topics"]
same_h = [(t, t) for t in V if tasks.split(t, t) == "held_out"]
other_h = [(x, y) for x in V for y in V if x != y and tasks.split(x, y) == "held_out"]

def probe(tag, model, tok):
    ms, mo = margins(model, tok, same_h), margins(model, tok, other_h)
    r = lambda xs: sum(x > 0 for x in xs) / len(xs)
    print(f"PROBE {tag}: refuse {r(ms):.2f} false {r(mo):.2f} AUC {auc(ms, mo):.3f}", flush=True)

report = {}
if "rules" in a.stages:
    model, tok = ti.load(Path(a.start))
    probe("start", model, tok)
    if a.freeze_embed:
        model.get_input_embeddings().weight.requires_grad_(False)
    t = time.time()
    model = ti.sft(model, tok, 0, a.steps, a.lr, short_batch=32, recall_tokens=1100, corpus_batch=2,
                   eval_every=500, phase="rules", policy_share=a.policy, drill_share=a.drill,
                   recall_every=a.recall_every)
    report["rules_s"] = time.time() - t
    print("RULES seconds", report["rules_s"], flush=True)
    ti.save(model, tok, out / "sft")
    probe("rules", model, tok)
    report["sft"] = ti.evaluate(out / "sft", a.per_task)["rates"]
    print("SCORES sft", report["sft"], flush=True)
if "dpo" in a.stages:
    model, tok = ti.load(out / "sft")
    t = time.time()
    pairs = instruct.preference_pairs(a.dpo_steps * 16, 0, recall_tokens=(64, 512), tokenizer=tok)
    model, history = instruct.dpo(model, tok, pairs, a.dpo_steps, a.dpo_lr, batch_size=16, seed=0,
                                  max_length=ti.POSITIONS)
    report["dpo_s"] = time.time() - t
    ti.save(model, tok, out / "dpo")
    model, tok = ti.load(out / "dpo")
    probe("dpo", model, tok)
    report["dpo"] = ti.evaluate(out / "dpo", a.per_task)["rates"]
    print("SCORES dpo", report["dpo"], flush=True)
(out / "report.json").write_text(json.dumps({**report, "args": vars(a)}, indent=1))
