"""Are the falsely refused held-out pairs the ones whose input embeddings are close?"""
import sys, torch
sys.path.insert(0, "notes/issue13")
from probe import margins
from nbhelpers.lab import train_instruct as ti, tasks
V = tasks.vocabulary()["topics"]
other = [(x, y) for x in V for y in V if x != y and tasks.split(x, y) == "held_out"]
for folder in sys.argv[1:]:
    model, tok = ti.load(folder)
    E = torch.nn.functional.normalize(model.get_input_embeddings().weight.detach().float(), dim=-1)
    i = lambda w: tok(" " + w, add_special_tokens=False)["input_ids"][0]
    cos = [float(E[i(x)] @ E[i(y)]) for x, y in other]
    m = margins(model, tok, other)
    bad = [c for c, mm in zip(cos, m) if mm > 0]; good = [c for c, mm in zip(cos, m) if mm <= 0]
    print(folder, f"refused {len(bad)}: mean cos {sum(bad)/max(1,len(bad)):.2f}; answered {len(good)}: mean cos {sum(good)/len(good):.2f}")
    print(" corr", float(torch.corrcoef(torch.tensor([cos, m]))[0, 1]))
