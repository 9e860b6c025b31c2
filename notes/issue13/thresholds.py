"""First-token margins on every held-out vocabulary pair: could one shift of the threshold separate them?"""
import sys, torch
sys.path.insert(0, "notes/issue13")
from probe import margins, auc
from nbhelpers.lab import train_instruct as ti, tasks
V = tasks.vocabulary()["topics"]
same = [(t, t) for t in V if tasks.split(t, t) == "held_out"]
other = [(x, y) for x in V for y in V if x != y and tasks.split(x, y) == "held_out"]
for folder in sys.argv[1:]:
    model, tok = ti.load(folder)
    ms, mo = margins(model, tok, same), margins(model, tok, other)
    print(folder, f"AUC {auc(ms, mo):.3f}; same min {min(ms):.2f}; other sorted top:", sorted(mo)[-8:])
    for shift in (0, 0.5, 1.0, 1.5):
        print(f"  shift {shift}: refuse {sum(m > shift for m in ms) / len(ms):.2f}, answer {sum(m <= shift for m in mo) / len(mo):.3f} of {len(mo)}")
    worst = sorted(zip(mo, other))[-6:]
    print("  worst other:", [(p, round(m, 1)) for m, p in worst])
