"""Offline tiny models: the same architectures as the real ones, small enough for a CPU, built without a network.

`ensure(name)` returns a local folder that `from_pretrained` loads exactly like a Hub id. The first call builds the
model from a seed and saves it with `save_pretrained` (safetensors); later calls reuse it. A manifest of file hashes
written last detects a damaged or half-built cache, which is then rebuilt.

- mixtral:    MixtralForCausalLM (8 experts, top-2) with a byte-level BPE tokenizer and the Mixtral chat template
- sd:         StableDiffusionPipeline (UNet, VAE, CLIP text encoder, the real 49,408-token CLIP tokenizer)
- sd-inpaint: the same with a 9-channel inpainting UNet
- sdxl:       StableDiffusionXLPipeline: SDXL's UNet conditioning (two CLIP text encoders, the second with a
              projection giving the pooled vector, and the "text_time" size/crop embedding), the same tiny VAE
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from nbhelpers import checks, persist
from nbhelpers.paths import data_dir

BUILDER_VERSION = 1
SEED = 1234
MANIFEST = "nbhelpers-manifest.json"

# The chat template of Mixtral-8x7B-Instruct-v0.1: no system role, strictly alternating turns.
MIXTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

_TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Mixture of experts routes each token to two of eight experts.",
    "Le renard brun saute par-dessus le chien paresseux.", "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.", "La volpe marrone salta sopra il cane pigro.",
    "def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i * i)\n",
    "[INST] What is a mixture of experts? [/INST] A layer where a router picks experts for each token.</s>",
    "a red circle on a white background", "a blue square on a black background",
]


def stand_in_tokenizer(mixtral_template: bool = True):
    """A 512-token byte-level BPE trained offline in milliseconds, with Mixtral's special tokens (<unk> 0, <s> 1,
    </s> 2) and chat template: the tiny model's tokenizer, and the rehearsal's stand-in for real ones."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="</s>", model_max_length=512)
    if mixtral_template:
        tokenizer.chat_template = MIXTRAL_CHAT_TEMPLATE
    return tokenizer


def build_mixtral(folder: Path) -> None:
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    tokenizer = stand_in_tokenizer()

    config = MixtralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = MixtralForCausalLM(config)
    model.generation_config.pad_token_id = 2
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def clip_tokenizer():
    """The real CLIP tokenizer (49,408 tokens) from the BPE merges shipped in data/clip (MIT licence, open_clip)."""
    from transformers import CLIPTokenizer

    lines = gzip.open(data_dir() / "clip" / "bpe_simple_vocab_16e6.txt.gz").read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=merges, model_max_length=77)


def _bytes_to_unicode() -> dict:
    """GPT-2's reversible map from bytes to printable characters, which CLIP's BPE is written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def sd_components(unet_in_channels: int = 4):
    """UNet, VAE, text encoder, tokenizer and scheduler of a tiny SD 1.x pipeline (seeded)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    # Cross-attention only at the half-resolution level: about five times faster to train than at full resolution.
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=unet_in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=16,
    )
    # Four levels like the real VAE, so one latent pixel covers 8x8 image pixels as in SD.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": clip_tokenizer(),
            "scheduler": scheduler}


def build_sd(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**sd_components(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


def build_sd_inpaint(folder: Path) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(**sd_components(unet_in_channels=9), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


def sdxl_components():
    """UNet, VAE, both text encoders, tokenizers and scheduler of a tiny SDXL pipeline (seeded).

    What makes it SDXL and not SD 1.x: the UNet reads the two encoders' hidden states side by side (32 + 32 = 64
    wide) and adds a "text_time" embedding of the second encoder's pooled vector (32) and six size numbers
    (original height and width, crop top and left, target height and width; 8 sinusoidal features each)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8, cross_attention_dim=64,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    )
    config = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    tokenizer = clip_tokenizer()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(config), "tokenizer": tokenizer,
            "text_encoder_2": CLIPTextModelWithProjection(config), "tokenizer_2": tokenizer, "scheduler": scheduler}


def build_sdxl(folder: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    StableDiffusionXLPipeline(**sdxl_components()).save_pretrained(folder, safe_serialization=True)


BUILDERS = {"mixtral": build_mixtral, "sd": build_sd, "sd-inpaint": build_sd_inpaint, "sdxl": build_sdxl}
# Files a model cannot load without. A manifest must list them (and they must match their hashes): a manifest that
# lists fewer files, or none, would otherwise vouch for a folder that from_pretrained then fails on.
_SD_FILES = ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
             "text_encoder/model.safetensors", "tokenizer/tokenizer.json")
REQUIRED = {"mixtral": ("config.json", "model.safetensors", "tokenizer.json"), "sd": _SD_FILES, "sd-inpaint": _SD_FILES,
            "sdxl": _SD_FILES + ("text_encoder_2/model.safetensors", "tokenizer_2/tokenizer.json")}


def cache_root() -> Path:
    return persist.nbhelpers_cache() / "tiny"


def ensure(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of tiny model `name`, built now if missing or damaged."""
    checks.choice("tiny model", name, BUILDERS)
    folder = Path(root) / name if root else cache_root() / name
    if is_valid(folder):
        return folder
    # Checked before a minute of building, naming the setting that chose the folder.
    persist.check_writable(folder.parent, "--out" if root else _cache_setting())
    with persist.atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        BUILDERS[name](tmp)
        _write_manifest(tmp)
    if not is_valid(folder):
        raise RuntimeError(f"the tiny model {name} was built in {folder} but does not verify against its manifest")
    return folder


def _cache_setting() -> str:
    return "NBHELPERS_CACHE" if os.environ.get("NBHELPERS_CACHE") else "cache folder"


def build_all(root: str | os.PathLike | None = None) -> dict:
    return {name: ensure(name, root) for name in BUILDERS}


def is_valid(folder: Path) -> bool:
    manifest_path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("builder_version") != BUILDER_VERSION:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not set(REQUIRED.get(Path(folder).name, ())) <= set(files) or not files:
        return False
    return all(
        (Path(folder) / rel).is_file() and _sha256(Path(folder) / rel) == digest
        for rel, digest in files.items()
    )


def weight_digests(folder: Path) -> dict:
    """sha256 of every safetensors file: what a deterministic build must reproduce."""
    return {rel: digest for rel, digest in json.loads((Path(folder) / MANIFEST).read_text())["files"].items()
            if rel.endswith(".safetensors")}


def _write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / MANIFEST).write_text(json.dumps({"builder_version": BUILDER_VERSION, "seed": SEED, "files": files}, indent=1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
