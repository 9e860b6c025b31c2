"""A1111 `parameters` PNG chunk: written, read back, and compatible with text A1111 itself writes."""

import numpy as np
from PIL import Image

from nbhelpers.diffusion import Generation, metadata


def test_png_round_trip(tmp_path):
    result = Generation(
        images=[Image.new("RGB", (64, 64), (200, 10, 10)), Image.new("RGB", (64, 64), (10, 200, 10))],
        seeds=[41, 42],
        settings={"mode": "txt2img", "prompt": "a cat, (red hat:1.3)\nsecond line", "negative_prompt": "blurry, bad",
                  "sampler": "DPM++ 2M Karras", "steps": 25, "guidance_scale": 7.5, "width": 64, "height": 64,
                  "model": "tiny:sd"})
    paths = result.save(tmp_path, "cat")
    assert [p.name for p in paths] == ["cat-41.png", "cat-42.png"]
    info = metadata.read_png(paths[1])
    assert info["Prompt"] == "a cat, (red hat:1.3)\nsecond line"
    assert info["Negative prompt"] == "blurry, bad"
    assert (info["Steps"], info["Sampler"], info["CFG scale"], info["Seed"], info["Size"]) == \
           (25, "DPM++ 2M Karras", 7.5, 42, "64x64")
    assert info["Model"] == "tiny:sd"  # quoted on write because of the colon, unquoted on read
    assert np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(result.images[0]))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_parses_text_written_by_a1111():
    text = ("masterpiece, (cat:1.2), sitting\nNegative prompt: lowres, bad anatomy\n"
            "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, "
            'Lora hashes: "a: 1, b: 2", Version: v1.9.4')
    info = metadata.parse_parameters(text)
    assert info["Prompt"] == "masterpiece, (cat:1.2), sitting"
    assert info["Negative prompt"] == "lowres, bad anatomy"
    assert info["Sampler"] == "DPM++ 2M Karras"  # "Schedule type: Karras" folded back in
    assert info["Seed"] == 1234 and info["CFG scale"] == 7 and info["Denoising strength"] == 0.7
    assert info["Lora hashes"] == "a: 1, b: 2"


def test_prompt_only_and_missing_chunk(tmp_path):
    assert metadata.parse_parameters("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert metadata.read_png(plain) == {}
