"""Rules phase with a crowd drill: half of the drill on the stand-in words closest to the topics' centroid, which
share the topics' common direction (the topics' mean pair cosine is ~0.3, the stand-in words' 0.02)."""
import sys, torch
from pathlib import Path
from nbhelpers.lab import train_instruct as ti, tasks
torch.set_num_threads(2)
start, out, steps, size = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
original, CROWD = ti.policy_drill, []
BARE = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0

def crowd_drill(rng, near, same_share=0.5):
    if rng.random() < BARE:  # no policy, no refusal: vocabulary topics (the six spared) and crowd words
        if rng.random() < 0.5:
            return tasks.policy(rng, form="bare", spare_held_out=True)
        return tasks.policy(rng, form="bare", topics=[rng.choice(CROWD)])
    if rng.random() < 0.5:
        banned = rng.choice(CROWD)
        other = rng.choice([w for w in CROWD if w != banned])
        form = "same" if rng.random() < same_share else "other"
        return tasks.policy(rng, form=form, topics=[banned] if form == "same" else [banned, other])
    return original(rng, near, same_share)

ti.policy_drill = crowd_drill
model, tok = ti.load(start)
E = torch.nn.functional.normalize(model.get_input_embeddings().weight.detach().float(), dim=-1)
ids = lambda ws: [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ws]
centre = E[ids(tasks.vocabulary()["topics"])].mean(0)
words = ti.stand_in_words(tok)
CROWD[:] = [words[i] for i in (E[ids(words)] @ centre).topk(size).indices.tolist()]
print("crowd", CROWD[:12], "mean pair cosine %.2f" % ti.crowding(model, tok, CROWD), flush=True)
model = ti.sft(model, tok, 0, steps, 1e-3, short_batch=32, recall_tokens=1100, corpus_batch=2, phase="rules",
               policy_share=0.75, drill_share=1.0, recall_every=4, drill_same=0.4, drill_topics=True)
ti.save(model, tok, out)
