"""What conditions the UNet besides the noisy latents and the timestep: the prompt, and for SDXL the image's size.

    encoder = TextEncoder(pipe, trained=False, family="sdxl")
    encoder.precompute(prompts, device); encoder.offload()      # frozen encoders: once, then off the GPU
    states, pooled = encoder(batch_prompts, device)             # pooled is None for SD 1.x
    added = {"text_embeds": pooled, "time_ids": size_conditioning(batch["origins"], resolution, device)}

SD 1.x reads one CLIP encoder's last hidden states. SDXL reads two encoders side by side and a pooled vector, plus
six numbers per image (original size, crop corner, target size: "micro-conditioning"), computed here exactly as
StableDiffusionXLPipeline computes them (tests/test_train_sdxl.py compares the two).
"""

from __future__ import annotations

import contextlib


class TextEncoder:
    """Prompts -> what conditions the UNet: (hidden states, pooled vector or None).

    SD 1.x: the CLIP encoder's last hidden states. SDXL: the second-to-last hidden states of both encoders side by
    side (768 + 1280 = 2048 wide) and the second encoder's projected pooled vector (1280), as its pipeline does.
    Frozen encoders are run once per distinct prompt (`precompute`), after which they can leave the GPU."""

    def __init__(self, pipe, trained: bool, family: str = "sd"):
        self.pipe, self.trained, self.family, self.cache = pipe, trained, family, {}

    @staticmethod
    def names(family: str) -> tuple:
        return ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",)

    def _ids(self, tokenizer, prompts, device):
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(device)

    def encode(self, prompts: list[str], device, encoders: dict):
        """`encoders`: name -> the module to run (the prepared, maybe DDP-wrapped, one when it trains)."""
        import torch

        if self.family != "sdxl":
            return encoders["text_encoder"](self._ids(self.pipe.tokenizer, prompts, device))[0], None
        states, pooled = [], None
        for name, tokenizer in zip(self.names("sdxl"), (self.pipe.tokenizer, self.pipe.tokenizer_2)):
            out = encoders[name](self._ids(tokenizer, prompts, device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the second encoder's: CLIPTextModelWithProjection's text_embeds
        return torch.cat(states, dim=-1), pooled

    def precompute(self, prompts, device, chunk: int = 8) -> None:
        """Encode every distinct prompt once, in a fixed order (a resumed run caches bit-identical values)."""
        import torch

        encoders = {name: getattr(self.pipe, name) for name in self.names(self.family)}
        unique = sorted(set(prompts))
        with torch.no_grad():
            for start in range(0, len(unique), chunk):
                part = unique[start:start + chunk]
                states, pooled = self.encode(part, device, encoders)
                for i, prompt in enumerate(part):
                    self.cache[prompt] = (states[i], None if pooled is None else pooled[i])

    def offload(self) -> None:
        """Frozen encoders, their prompts cached, leave the GPU (SDXL's are 1.6 GB in fp16); validation images
        bring them back for a moment (`on_device`)."""
        import torch

        if torch.cuda.is_available():
            for name in self.names(self.family):
                getattr(self.pipe, name).to("cpu")
            torch.cuda.empty_cache()

    @contextlib.contextmanager
    def on_device(self, device):
        before = {name: getattr(self.pipe, name).device for name in self.names(self.family)}
        for name in before:
            getattr(self.pipe, name).to(device)
        try:
            yield
        finally:
            for name, where in before.items():
                getattr(self.pipe, name).to(where)

    def __call__(self, prompts: list[str], device, models: dict | None = None):
        """`models`: the prepared models; its text encoders are used when they train."""
        import torch

        if self.trained:
            return self.encode(prompts, device, {name: models[name] for name in self.names(self.family)})
        missing = [p for p in prompts if p not in self.cache]
        if missing:  # a prompt that was not precomputed (the lesson's step-by-step check calls this directly)
            self.precompute(missing, device)
        states = torch.stack([self.cache[p][0] for p in prompts])
        pooled = torch.stack([self.cache[p][1] for p in prompts]) if self.family == "sdxl" else None
        return states, pooled


def size_conditioning(origins, resolution: int, device):
    """SDXL's micro-conditioning, one row per example: original (height, width), crop (top, left), target (height,
    width). Our images are resized so the shorter side is `resolution`, then centre-cropped (data.square)."""
    import torch

    target = torch.tensor([resolution, resolution], dtype=origins.dtype).expand(len(origins), 2)
    return torch.cat([origins, target], dim=1).to(device, torch.float32)
