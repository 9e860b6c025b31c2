"""The lab's Inception: a small CNN trained to name the colour, shape and background of lab pictures.

FID, KID and LPIPS compare pictures through the features of a trained network (Inception-v3 for FID and KID,
AlexNet/VGG for LPIPS). Those weights are downloads; the `tiny` profile is offline. This network plays their part
on lab pictures: its features separate what the lab captions talk about, so distances between feature sets mean
something for lab images and nothing for photographs. Figures computed with it are lab-FID, lab-KID and
lab-LPIPS, never to be compared with published FID/KID/LPIPS values.

    net = load()                        # from data/lab/shape-features (safetensors, ~0.1 MB)
    net(images)                         # (N, 32) standardised features of float images in [0, 1], (N, 3, H, W)
    net.layers(images)                  # the three conv blocks' activations (what lab-LPIPS compares)

The shipped weights read colour and background of fresh drawings without error but shape only 35% of the time
(chance 17%): see data/lab/shape-features/README.md. Retrain with
`python -m nbhelpers.lab.train_features --out data/lab/shape-features` (a few CPU-minutes).
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from nbhelpers.lab import shapes

SIZE = 32  # pictures are read at 32x32: the shape stays plain, and training costs a quarter of 64x64


class ShapeFeatures(nn.Module, PyTorchModelHubMixin):
    def __init__(self, width: int = 16, features: int = 32):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(4, c_out), nn.SiLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.SiLU())

        self.blocks = nn.ModuleList([block(3, width), block(width, 2 * width), block(2 * width, 4 * width)])
        self.project = nn.Linear(4 * width, features)
        self.heads = nn.ModuleDict({"colour": nn.Linear(features, len(shapes.COLOURS)),
                                    "shape": nn.Linear(features, len(shapes.SHAPES)),
                                    "background": nn.Linear(features, len(shapes.BACKGROUNDS))})
        self.num_features = features  # torchmetrics reads this instead of probing with a dummy image

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.float()
        if x.shape[-2:] != (SIZE, SIZE):
            x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        x = x * 2 - 1
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """What the classification heads read: the pooled last block, projected."""
        return nn.functional.silu(self.project(self.layers(images)[-1].mean(dim=(2, 3))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, num_features) of float images in [0, 1], each vector standardised: KID's cubic kernel of
        raw activations overflows float32 precision, as Inception's small pooled activations never do."""
        return nn.functional.layer_norm(self.embed(images), (self.num_features,))

    def classify(self, images: torch.Tensor) -> dict:
        features = self.embed(images)
        return {name: head(features) for name, head in self.heads.items()}


def folder():
    from nbhelpers.paths import data_dir

    return data_dir() / "lab" / "shape-features"


def load(path=None) -> ShapeFeatures:
    """The shipped lab feature network, in eval mode (safetensors; nothing downloaded)."""
    net = ShapeFeatures.from_pretrained(str(path or folder()))
    return net.eval().requires_grad_(False)
