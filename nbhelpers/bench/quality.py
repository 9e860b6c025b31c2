"""How good: image-quality figures, measured with maintained libraries, each named by what measured it.

- FID, KID against a reference set. t4/large: torchmetrics with the image embeddings of CLIP ViT-B/16 as features
  (FID in CLIP space, which follows human judgement more closely than Inception's ImageNet classes: Kynkaanniemi et
  al. 2023); reference: the first COCO 2017 validation images, prompts: their captions. tiny: lab-FID, lab-KID,
  the same torchmetrics code with the lab feature network (`nbhelpers.lab.features`); reference: drawn lab shapes.
- LPIPS diversity among seeds: LPIPS's formula (unit weights) on the layers of the same network, CLIP's on
  t4/large, the lab network's under tiny (lab-LPIPS).
- CLIP score. t4/large: torchmetrics CLIPScore, openai/clip-vit-base-patch16. tiny: not measured, the lab has no
  CLIP image tower (lab accuracy, from the lab checker, measures prompt following).
- Human preference. t4/large: PickScore v1 (a CLIP-H fine-tuned on Pick-a-Pic votes) through transformers,
  safetensors. tiny: not measured, nobody ever voted on lab shapes.
Every judge loads safetensors through transformers. The classic Inception-v3 FID (`hub_judges(features=2048)`, with
torch-fidelity) and torchmetrics' AlexNet LPIPS (`lpips_net="alex"`) are opt-in: their weights are pickled `.pth`
files that torch.hub loads with `weights_only=False`, which this project does not do by default.
Weights are fetched once on first use and cached (Hugging Face cache).

Sample sizes. FID estimates two covariance matrices: with fewer images than feature dimensions they are singular
and FID is biased upwards, and it stays biased (by an amount that depends on n) until thousands of images; so every
FID here carries its n and a note below `FID_FACTOR` x dimensions, and is comparable only between runs with the
same n. KID is unbiased at any n (Binkowski et al. 2018): prefer it for small sets.

    judges = lab_judges()                                    # or hub_judges() on a GPU
    figures = measure(judges, generated, reference, groups)  # FID, KID, LPIPS diversity, CLIP, preference
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

CLIP_MODEL = "openai/clip-vit-base-patch16"
PREFERENCE_MODEL = "yuvalkirstain/PickScore_v1"
PREFERENCE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # PickScore's own processor (its model card)
REFERENCE_DATASET = ("AKCIT/coco2017-captioning", "validation")  # image + caption columns; the first n rows
FID_FACTOR = 10  # below FID_FACTOR x feature dimensions, FID is reported with a note on its bias
KID_SUBSET = 100  # torchmetrics' KID averages over random subsets of this size (at most half the smaller set)


def pixels(images):
    """PIL images (or an (N, 3, H, W) tensor) as a float tensor in [0, 1]."""
    import numpy as np
    import torch

    if isinstance(images, torch.Tensor):
        return images.float()
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2) / 255.0


# ---- the metrics, each a few lines around a maintained implementation ----------------------------------------

def fid(real, fake, features) -> float:
    """Frechet distance between the feature distributions of two image sets (torchmetrics).
    `features`: 2048 for Inception-v3 (torch-fidelity's weights) or any nn.Module mapping [0,1] images to (N, D)."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=features, normalize=True)
    with torch.no_grad():
        metric.update(pixels(real), real=True)
        metric.update(pixels(fake), real=False)
        return max(0.0, float(metric.compute()))  # tiny negative values are round-off of an exact 0


def kid(real, fake, features, subset_size: int | None = None, subsets: int = 50, seed: int = 0) -> tuple:
    """Kernel Inception Distance (torchmetrics): mean and std over random subsets. Unbiased, so usable on small sets;
    an estimate, so slightly negative when both sets come from the same distribution."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    size = subset_size or min(KID_SUBSET, min(len(real), len(fake)) // 2)  # subsets must differ for a spread
    metric = KernelInceptionDistance(feature=features, subsets=subsets, subset_size=size, normalize=True)
    torch.manual_seed(seed)  # the subsets are drawn with torch's global generator
    with torch.no_grad():
        metric.update(pixels(real), real=True)
        metric.update(pixels(fake), real=False)
        mean, std = metric.compute()
    return float(mean), float(std)


class UnitLPIPS:
    """LPIPS's formula (Zhang et al. 2018) on a network's layers (`net.layers(images)`: the lab feature network, or
    CLIP's image tower): per layer, unit-normalise each pixel's channel vector, square the difference, average over
    pixels; sum over layers. Real LPIPS learns one weight per channel from human judgements; every weight here is 1
    (the paper's uncalibrated baseline, which it found already close to human judgements for trained networks)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, a, b):
        import torch

        def unit(x):
            return x / (x.norm(dim=1, keepdim=True) + 1e-10)

        with torch.no_grad():
            return sum(((unit(x) - unit(y)) ** 2).sum(dim=1).mean(dim=(1, 2))
                       for x, y in zip(self.net.layers(pixels(a)), self.net.layers(pixels(b))))


def clip_features(model_id: str = CLIP_MODEL, depths=(0.25, 0.5, 0.75)):
    """CLIP's image tower as a feature network (safetensors): forward gives the projected image embedding (FID/KID
    features), `layers` the patch grids of the transformer blocks at `depths` (fractions of the tower; UnitLPIPS)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    class ClipFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            model = CLIPModel.from_pretrained(model_id, use_safetensors=True).eval()
            self.vision, self.projection = model.vision_model, model.visual_projection
            self.side = model.config.vision_config.image_size
            self.num_features = model.config.projection_dim
            processor = CLIPImageProcessor.from_pretrained(model_id)
            self.register_buffer("mean", torch.tensor(processor.image_mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(processor.image_std).view(1, 3, 1, 1))

        def _inputs(self, images):
            images = torch.nn.functional.interpolate(images.float(), size=(self.side, self.side), mode="bicubic",
                                                     antialias=True, align_corners=False)
            return (images.clamp(0, 1) - self.mean) / self.std

        def layers(self, images):
            hidden = self.vision(pixel_values=self._inputs(images), output_hidden_states=True).hidden_states
            grids = []
            for index in sorted({max(1, round(depth * (len(hidden) - 1))) for depth in depths}):
                patches = hidden[index][:, 1:]  # the class token is not a place in the picture
                side = int(patches.shape[1] ** 0.5)
                grids.append(patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side))
            return grids

        def forward(self, images):
            with torch.no_grad():
                return self.projection(self.vision(pixel_values=self._inputs(images)).pooler_output)

    return ClipFeatures()


def torchmetrics_lpips(net: str = "alex"):
    """Real LPIPS (torchmetrics; the backbone's ImageNet weights are fetched once by torchvision, the linear layers
    ship with torchmetrics): a function of two image batches giving one distance per pair. Opt-in: the weights are
    pickled .pth files."""
    import torch
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True, reduction="none")

    def distance(a, b):
        with torch.no_grad():
            return metric.net(pixels(a), pixels(b), normalize=True).flatten()

    return distance


def diversity(groups, distance) -> float:
    """Mean LPIPS between every pair of images within each group (one group = one prompt, several seeds): 0 when
    the seeds give identical pictures, higher when they differ."""
    import torch

    scores = []
    for images in groups:
        pairs = list(itertools.combinations(range(len(images)), 2))
        if not pairs:
            from nbhelpers.checks import ParameterError

            raise ParameterError("groups", len(images), "at least 2 images per prompt (pairs of seeds)")
        a, b = zip(*[(images[i], images[j]) for i, j in pairs])
        scores.append(distance(list(a), list(b)))
    return float(torch.cat([torch.as_tensor(s).flatten() for s in scores]).mean())


def _features_of(out):
    """transformers 5 returns a model output from get_*_features, 4.x a tensor: the projected embedding either way."""
    return out if hasattr(out, "norm") else out.pooler_output


def _projected(model):
    """`model` (a CLIPModel) whose get_*_features give plain tensors, as torchmetrics' CLIPScore expects."""
    import torch

    class Projected(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            return _features_of(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return _features_of(self.model.get_text_features(*args, **kwargs))

    return Projected()


def load_clip(model_id: str, processor_id: str | None = None, device: str = "cpu"):
    """(CLIPModel, CLIPProcessor) from the Hub (cached after the first time) or a local folder; safetensors only."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_id, use_safetensors=True).eval().to(device)
    return model, CLIPProcessor.from_pretrained(processor_id or model_id)


def clip_score(images, prompts, model_id: str = CLIP_MODEL, device: str = "cpu") -> float:
    """CLIP score (torchmetrics): 100 x cosine(image, prompt) in CLIP space, averaged; higher follows the prompt."""
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = load_clip(model_id, device=device)
    metric = CLIPScore(model_name_or_path=lambda: (_projected(model), processor))
    with torch.no_grad():
        batch = (pixels(images) * 255).round().to(torch.uint8)
        return float(metric(list(batch), list(prompts)))


def preference_score(images, prompts, model_id: str = PREFERENCE_MODEL, processor_id: str = PREFERENCE_PROCESSOR,
                     device: str = "cpu") -> float:
    """Mean PickScore: the preference model's logit scale x cosine(image, prompt). People preferred the picture with
    the higher score in about 70% of Pick-a-Pic's held-out pairs; compare models on the same prompts only."""
    import torch

    model, processor = load_clip(model_id, processor_id, device)
    with torch.no_grad():
        image = processor(images=list(images), return_tensors="pt").to(device)
        text = processor(text=list(prompts), padding=True, truncation=True, max_length=77,
                         return_tensors="pt").to(device)
        a = _features_of(model.get_image_features(**image))
        b = _features_of(model.get_text_features(**text))
        a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
        return float((model.logit_scale.exp() * (a * b).sum(dim=-1)).mean())


# ---- who judges, per profile -----------------------------------------------------------------------------------

@dataclass
class Judges:
    """The networks behind each figure, with the names the figures are reported under."""
    prefix: str  # "lab-" when the figures are lab figures
    features: object  # 2048 (Inception) or an nn.Module
    features_name: str
    feature_dims: int
    lpips: object  # distance(a, b) -> one value per pair
    lpips_name: str
    clip: str | None = None  # model id or folder; None: not measured, for `reasons["clip_score"]`
    preference: tuple | None = None  # (model id, processor id)
    reasons: dict = field(default_factory=dict)


def lab_judges() -> Judges:
    """Offline judges for `tiny`: the lab feature network for FID, KID and LPIPS; CLIP and preference say why not."""
    from nbhelpers.lab import features

    net = features.load()
    return Judges(prefix="lab-", features=net, features_name="lab shape-feature network (nbhelpers.lab.features)",
                  feature_dims=net.num_features, lpips=UnitLPIPS(net),
                  lpips_name="lab-LPIPS (LPIPS formula, lab network layers, unit weights)",
                  reasons={"clip_score": "not measured under tiny: the lab SD has a text encoder but no CLIP image "
                                         "tower exists for lab pictures; lab accuracy measures prompt following",
                           "preference": "not measured under tiny: a preference model learns from people's votes, "
                                         "and nobody voted on lab shapes"})


def hub_judges(features="clip", lpips_net="clip", clip: str = CLIP_MODEL,
               preference: tuple = (PREFERENCE_MODEL, PREFERENCE_PROCESSOR)) -> Judges:
    """The real judges (t4, large). Each argument may name a local stand-in instead (the tests do, offline).

    features: "clip" (CLIP's image embeddings, `clip_features(clip)`), 2048 (Inception-v3, opt-in: torch-fidelity and
    pickled weights) or a network; lpips_net: "clip" (`UnitLPIPS` on the same CLIP tower), "alex"/"vgg"
    (torchmetrics' LPIPS, opt-in: pickled weights) or a distance function."""
    from nbhelpers import checks

    if isinstance(features, int):
        import importlib.util

        if importlib.util.find_spec("torch_fidelity") is None:
            raise checks.ParameterError("features", features, "Inception FID needs torch-fidelity: "
                                        "pip install 'nbhelpers[quality]' (or pass a feature network)")
    tower = clip_features(clip) if "clip" in (features, lpips_net) else None
    if isinstance(features, int):
        dims, name = features, f"Inception-v3 pool features ({features}-d, torch-fidelity FID weights)"
    elif features == "clip":
        features, dims, name = tower, tower.num_features, f"CLIP image embeddings ({clip}, {tower.num_features}-d)"
    else:
        dims, name = features.num_features, type(features).__name__
    if lpips_net == "clip":
        lpips, lpips_name = UnitLPIPS(tower), f"LPIPS formula, unit weights, on {clip} layers"
    elif isinstance(lpips_net, str):
        lpips, lpips_name = torchmetrics_lpips(lpips_net), f"LPIPS ({lpips_net})"
    else:
        lpips, lpips_name = lpips_net, "LPIPS (given network)"
    return Judges(prefix="", features=features, features_name=name, feature_dims=dims, lpips=lpips,
                  lpips_name=lpips_name, clip=clip, preference=tuple(preference))


def fid_note(n: int, dims: int) -> str | None:
    """What a reader must know about an FID computed on `n` images with `dims`-dimensional features."""
    if n <= dims:
        return (f"FID on {n} images with {dims}-d features: the covariance is singular (rank <= {n - 1}), FID is "
                f"strongly biased upwards; compare only runs with the same n, prefer KID")
    if n < FID_FACTOR * dims:
        return (f"FID on {n} images (< {FID_FACTOR} x {dims} feature dims) is biased upwards; compare only runs "
                f"with the same n, prefer KID")
    return None


def measure(judges: Judges, generated, reference, groups=(), prompts=(), device: str = "cpu") -> dict:
    """Every figure the judges can give for `generated` images against `reference` images.

    groups: lists of images of one prompt with different seeds (LPIPS diversity); prompts: one per generated image
    (CLIP score and preference). Each figure names its metric, its model and the number of images."""
    generated, reference = list(generated), list(reference)
    n = min(len(generated), len(reference))
    figures = {"fid": {"metric": judges.prefix + "FID", "value": round(fid(reference, generated, judges.features), 3),
                       "n_generated": len(generated), "n_reference": len(reference),
                       "features": judges.features_name, "note": fid_note(n, judges.feature_dims)}}
    mean, std = kid(reference, generated, judges.features)
    figures["kid"] = {"metric": judges.prefix + "KID", "value": round(mean, 5), "std": round(std, 5),
                      "subset_size": min(KID_SUBSET, n // 2), "n_generated": len(generated),
                      "n_reference": len(reference), "features": judges.features_name}
    if groups:
        figures["lpips_diversity"] = {"metric": judges.lpips_name, "value": round(diversity(groups, judges.lpips), 4),
                                      "prompts": len(groups), "seeds": len(groups[0])}
    for name, model, run in (("clip_score", judges.clip, lambda: clip_score(generated, prompts, judges.clip, device)),
                             ("preference", judges.preference,
                              lambda: preference_score(generated, prompts, *judges.preference, device=device))):
        if model and prompts:
            figures[name] = {"metric": "CLIP score" if name == "clip_score" else "PickScore",
                             "value": round(run(), 3), "model": model, "n": len(generated)}
        else:
            figures[name] = {"value": None, "reason": judges.reasons.get(name, "no prompts given")}
    return figures
