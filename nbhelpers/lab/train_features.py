"""Train the lab feature network (`nbhelpers.lab.features`): colour, shape and background of drawn lab pictures.

    python -m nbhelpers.lab.train_features --out data/lab/shape-features --seed 0

Every colour-shape pair is shown (held-out pairs too: this network measures pictures, it is not the model under
test), on every background, with the training jitter of position, size and rotation and a little pixel noise so
that slightly soft generations are read like clean drawings. Prints the accuracy on fresh pictures at the end.
The model card (data/lab/shape-features/README.md) records the shipped run; save_pretrained's own card is
replaced by it.
"""

from __future__ import annotations

import argparse
import time

import torch

from nbhelpers.lab import features, shapes


def drawn(n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """`n` jittered lab pictures (N, 3, 64, 64) in [0, 1] and their labels."""
    import numpy as np

    pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    specs = shapes.sample(n, seed=seed, pairs=pairs)
    pixels = torch.from_numpy(np.stack([np.asarray(shapes.draw(s)) for s in specs])).permute(0, 3, 1, 2) / 255.0
    labels = {"colour": [list(shapes.COLOURS).index(s.colour) for s in specs],
              "shape": [shapes.SHAPES.index(s.shape) for s in specs],
              "background": [list(shapes.BACKGROUNDS).index(s.background) for s in specs]}
    return pixels, {k: torch.tensor(v) for k, v in labels.items()}


def accuracy(net, pixels, labels) -> dict:
    with torch.no_grad():
        logits = net.classify(pixels)
    return {k: round(float((logits[k].argmax(1) == labels[k]).float().mean()), 4) for k in labels}


def train(out: str, seed: int = 0, images: int = 5000, epochs: int = 8, batch: int = 32) -> dict:
    torch.manual_seed(seed)
    pixels, labels = drawn(images, seed)
    pixels = torch.nn.functional.interpolate(pixels, size=(features.SIZE,) * 2, mode="bilinear", antialias=True)
    net = features.ShapeFeatures()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * -(-images // batch))
    began = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(images)
        for start in range(0, images, batch):
            chosen = order[start:start + batch]
            noisy = (pixels[chosen] + 0.03 * torch.randn_like(pixels[chosen])).clamp(0, 1)
            logits = net.classify(noisy)
            loss = sum(torch.nn.functional.cross_entropy(logits[k], labels[k][chosen]) for k in labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}", flush=True)
    net.eval()
    held = accuracy(net, *drawn(600, seed + 1))
    from nbhelpers import persist

    with persist.atomic_path(out) as folder:
        net.save_pretrained(folder)  # safetensors and config.json
    print(f"accuracy on 600 fresh pictures: {held} ({time.perf_counter() - began:.0f} s)")
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(features.folder()))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    train(args.out, args.seed)


if __name__ == "__main__":
    main()
