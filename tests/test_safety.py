import pytest
import torch
from safetensors.torch import save_file

from nbhelpers import safety
from nbhelpers.checks import ParameterError


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickled_weights_are_refused_with_the_reason(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ParameterError, match="pickle, which can run arbitrary code"):
        safety.load_state_dict(path)


def test_opting_in_loads_tensors_but_still_refuses_code(tmp_path):
    path = tmp_path / "lora.pt"
    torch.save({"w": torch.arange(3.0)}, path)
    assert torch.equal(safety.load_state_dict(path, allow_pickle=True)["w"], torch.arange(3.0))

    class Payload:
        def __reduce__(self):
            return (print, ("this ran on load",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"w": Payload()}, evil)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        safety.load_state_dict(evil, allow_pickle=True)


def test_safetensors_and_safe_folders_pass(tmp_path):
    path = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    path.parent.mkdir()
    save_file({"w": torch.ones(2)}, str(path))
    assert safety.load_state_dict(path)["w"].sum() == 2
    assert safety.check_weights(tmp_path) == tmp_path
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ParameterError, match="diffusion_pytorch_model.bin"):
        safety.check_weights(tmp_path)


def test_missing_or_strange_files_are_clear_errors(tmp_path):
    with pytest.raises(ParameterError, match="must be an existing"):
        safety.check_weights(tmp_path / "nope.safetensors")
    odd = tmp_path / "weights.txt"
    odd.write_text("x")
    with pytest.raises(ParameterError, match="must be a .safetensors"):
        safety.check_weights(odd, parameter="lora")


def test_hub_pipelines_load_from_safetensors_only(tmp_path):
    """The benchmarks' Hub loader (SD3, FLUX) takes the same path as the profiles: a pipeline saved with pickled
    weights only is refused, the same pipeline in safetensors loads."""
    from nbhelpers import loaders, tiny

    pipe = loaders.load_hub_pipeline(str(tiny.ensure("sd")))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(Exception, match="safetensors"):
        loaders.load_hub_pipeline(str(tmp_path / "pickled"))
