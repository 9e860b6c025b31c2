"""Which held-out policy items a checkpoint gets wrong (both evaluation seeds)."""
import sys, torch
from nbhelpers.lab import train_instruct as ti, tasks
torch.set_num_threads(2)
H = set(tasks.refusal_held_out_topics())
for folder in sys.argv[1:]:
    model, tok = ti.load(folder)
    for seed, n in ((1234, 40), (7, 30)):
        items = [i for i in tasks.held_out_set(tok, per_task=n, seed=seed, tasks=("policy",))]
        result = tasks.score(model, tok, items)
        print(folder, seed, result["rates"])
        for i, row in zip(items, result["rows"]):
            if not row["correct"]:
                print("   FAIL", repr(i.message), "->", repr(row["reply"][:50]), "| in H:", i.expected["banned"] in H, i.expected["topic"] in H)
