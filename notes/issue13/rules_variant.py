"""The rules phase as train_instruct runs it, with keyword overrides: rules_variant.py <start> <out> key=value..."""
import ast, sys, torch
from pathlib import Path
from nbhelpers.lab import train_instruct as ti
torch.set_num_threads(2)
settings = dict(short_batch=32, recall_tokens=1100, corpus_batch=2, phase="rules", policy_share=0.75,
                drill_share=1.0, recall_every=4, drill_same=0.4, drill_topics=True, crowd_size=24, bare_share=0.15,
                decision_weight=2.0)
settings.update({k: ast.literal_eval(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])})
print(settings, flush=True)
model, tok = ti.load(Path(sys.argv[1]))
ti.save(ti.sft(model, tok, 0, 2200, 1e-3, **settings), tok, Path(sys.argv[2]))
