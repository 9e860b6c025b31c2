"""Training data: a folder of images (with optional `.txt` captions) read, checked and squared once, up front.

Every image is converted to RGB (transparency composited on white), resized so its shorter side is the training
resolution and centre-cropped. A folder with no images, a file that is not an image, a corrupt image or a caption
without its image is a `ParameterError` naming the file, raised before any model is loaded.

The order of examples is a *stream*: position p of the stream is example `permutation(epoch)[p % n]`, with one
seeded permutation per epoch. Each example also carries its position, and the trainer draws that example's noise and
timestep from a generator seeded by it. So a batch's content does not depend on how many processes share the work
or on whether the run was resumed: the basis of exact resume and of DDP matching a single process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbhelpers.checks import ParameterError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_SUFFIX = ".txt"


@dataclass
class ImageSet:
    images: list  # uint8 tensors (3, H, W), already square at the training resolution
    prompts: list[str]
    files: list[Path]
    origins: list = None  # per image (original height, original width, crop top, crop left): SDXL's conditioning


def load_folder(folder, resolution: int, *, instance_prompt: str | None = None, use_captions: bool = True,
                parameter: str = "data") -> ImageSet:
    """Read every image in `folder`. Captions come from `name.txt`, else `instance_prompt` (always, if not
    `use_captions`)."""
    folder = Path(folder)
    if not folder.exists():
        raise ParameterError(parameter, str(folder), "an existing folder of images; this path does not exist")
    if not folder.is_dir():
        raise ParameterError(parameter, str(folder), "a folder of images, not a file")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    captions = [p for p in files if p.suffix.lower() == CAPTION_SUFFIX]
    others = [p.name for p in files if p not in images and p not in captions]
    if others:
        raise ParameterError(parameter, str(folder), "only images (" + ", ".join(IMAGE_SUFFIXES) + ") and .txt "
                             "captions; these are neither: " + ", ".join(others[:5]))
    if not images:
        raise ParameterError(parameter, str(folder), "a folder holding at least one image; it holds none")
    stems = {p.stem for p in images}
    orphans = [p.name for p in captions if p.stem not in stems]
    if orphans:
        raise ParameterError(parameter, str(folder), "every caption beside its image; no image for " + ", ".join(orphans[:5]))

    pictures, origins = read_all(images, resolution, parameter)
    prompts = []
    for path in images:
        caption_file = path.with_suffix(CAPTION_SUFFIX)
        caption = read_caption(caption_file, parameter) if use_captions and caption_file.is_file() else None
        if caption is None and instance_prompt is None:
            raise ParameterError(parameter, str(path), "an image with a .txt caption beside it, or pass "
                                 "instance_prompt (--instance-prompt) to caption every image")
        if caption == "":
            raise ParameterError(parameter, str(caption_file), "a caption file with some text; it is empty")
        prompts.append(caption or instance_prompt)
    return ImageSet(pictures, prompts, images, origins)


def read_caption(path: Path, parameter: str = "data") -> str:
    """A caption file's text, stripped. Not UTF-8 (a Latin-1 file from an old editor) is refused naming the file
    rather than guessed: a wrong guess would silently train on mojibake."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as error:
        raise ParameterError(parameter, str(path), f"a caption in UTF-8; byte {error.start} "
                             f"(0x{error.object[error.start]:02x}) is not UTF-8. Save the file as UTF-8") from None


def load_images(paths, resolution: int, prompt: str, parameter: str = "class_data") -> ImageSet:
    """A known list of images, all with one prompt (the cached class images)."""
    paths = [Path(p) for p in paths]
    pictures, origins = read_all(paths, resolution, parameter)
    return ImageSet(pictures, [prompt] * len(paths), paths, origins)


def read_all(paths, resolution: int, parameter: str) -> tuple[list, list]:
    """(uint8 tensors, origins) of image files."""
    pictures, origins = [], []
    for path in paths:
        image, origin = square_with_origin(read_image_rgb(path, parameter), resolution)
        pictures.append(to_tensor(image))
        origins.append(origin)
    return pictures, origins


def read_image_rgb(path, parameter: str = "data"):
    from nbhelpers.images import read_rgb

    return read_rgb(path, parameter)


def read_image(path, resolution: int, parameter: str = "data"):
    return square(read_image_rgb(path, parameter), resolution)


def square(image, resolution: int):
    """RGB (nbhelpers.images.to_rgb: any mode, EXIF rotation, transparency on white), shorter side = resolution,
    centre crop."""
    return square_with_origin(image, resolution)[0]


def square_with_origin(image, resolution: int):
    """`square`, and where the square came from: (original height, original width, crop top, crop left), the crop
    corner in the resized image as SDXL's training script records it."""
    from PIL import Image

    from nbhelpers.images import to_rgb

    image = to_rgb(image)
    original = (image.height, image.width)
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS if scale < 1 else Image.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution)), (*original, top, left)


def to_tensor(image):
    import numpy
    import torch

    return torch.from_numpy(numpy.asarray(image, dtype=numpy.uint8).copy()).permute(2, 0, 1)


ENCODE_PIXELS = 8 * 512 * 512  # cached latents are encoded this many pixels at a time: 8 images at 512, 2 at 1024


def encode_batch(resolution: int) -> int:
    """Images per VAE call when caching latents: the VAE encoder's activations grow with the pixels it sees at once
    (8 SDXL images at 1024 would need ~6 GB on a T4); nbhelpers.plan.training predicts the same."""
    return max(1, min(8, ENCODE_PIXELS // (resolution * resolution)))


def to_model_range(pixels):
    """uint8 (B, 3, H, W) -> float in [-1, 1], what the VAE expects."""
    return pixels.float() / 127.5 - 1.0


class TrainingStream:
    """Position p -> one example (and one class example with prior preservation). A map-style dataset of `length`
    positions: the DataLoader reads it in order and accelerate shards whole batches across processes."""

    def __init__(self, instances: ImageSet, length: int, seed: int, classes: ImageSet | None = None):
        self.instances, self.classes, self.length, self.seed = instances, classes, length, seed
        self._orders: dict = {}

    def __len__(self) -> int:
        return self.length

    def _pick(self, position: int, count: int, part: int) -> int:
        import torch

        epoch = position // count
        if self._orders.get(part, (None,))[0] != epoch:  # keep one epoch's order per part in memory
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch * 2 + part)
            self._orders[part] = (epoch, torch.randperm(count, generator=generator).tolist())
        return self._orders[part][1][position % count]

    def __getitem__(self, position: int) -> dict:
        i = self._pick(position, len(self.instances.images), 0)
        item = {"image": self.instances.images[i], "prompt": self.instances.prompts[i], "key": 2 * position,
                "origin": _origin(self.instances, i)}
        if self.classes is not None:
            j = self._pick(position, len(self.classes.images), 1)
            item.update(class_image=self.classes.images[j], class_prompt=self.classes.prompts[j],
                        class_key=2 * position + 1, class_origin=_origin(self.classes, j))
        return item


def collate(items: list[dict]) -> dict:
    """Instance examples first, then their class examples: the prior loss splits the batch in two halves."""
    import torch

    images = [it["image"] for it in items] + [it["class_image"] for it in items if "class_image" in it]
    prompts = [it["prompt"] for it in items] + [it["class_prompt"] for it in items if "class_prompt" in it]
    keys = [it["key"] for it in items] + [it["class_key"] for it in items if "class_key" in it]
    origins = [it["origin"] for it in items] + [it["class_origin"] for it in items if "class_origin" in it]
    return {"images": torch.stack(images), "prompts": prompts, "keys": torch.tensor(keys, dtype=torch.long),
            "origins": torch.tensor(origins, dtype=torch.long)}


def _origin(images: ImageSet, i: int) -> tuple:
    """An image's origin; a set built without them (already square at the training size) is its own origin."""
    if images.origins is not None:
        return tuple(images.origins[i])
    side = images.images[i].shape[-1]
    return (side, side, 0, 0)
