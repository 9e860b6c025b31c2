"""Where the comparison fails: (w, w) vs (w, v) margins on drill words, trained topics and held-out topics."""
import sys, random, torch
sys.path.insert(0, "notes/issue13")
from probe import margins, auc
from nbhelpers.lab import train_instruct as ti, tasks
torch.set_num_threads(2)
V = tasks.vocabulary()["topics"]
H = [t for t in V if tasks.split(t, t) == "held_out"]
T = [t for t in V if t not in H]
for folder in sys.argv[1:]:
    model, tok = ti.load(folder)
    rng = random.Random(0)
    W = rng.sample(ti.stand_in_words(tok), 60)
    r = lambda xs: sum(x > 0 for x in xs) / len(xs)
    for name, words in (("drill words", W), ("train topics", T), ("held-out topics", H)):
        same = margins(model, tok, [(w, w) for w in words])
        other = margins(model, tok, [(w, rng.choice([v for v in words if v != w])) for w in words]
                        + [(rng.choice([v for v in words if v != w]), w) for w in words])
        print(f"{folder} {name}: same refuse {r(same):.2f} mean {sum(same)/len(same):.1f} | other refuse {r(other):.2f} "
              f"mean {sum(other)/len(other):.1f} | AUC {auc(same, other):.3f}")
    same = margins(model, tok, [(h, h) for h in H])
    print("  held-out (X,X):", {h: round(m, 1) for h, m in zip(H, same)})
    print("  held-out X banned, drill word asked:", [round(m, 1) for m in margins(model, tok, [(h, W[i]) for i, h in enumerate(H)])])
    print("  drill word banned, held-out X asked:", [round(m, 1) for m in margins(model, tok, [(W[i], h) for i, h in enumerate(H)])])
