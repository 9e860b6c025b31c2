import pytest
import torch

from nbhelpers import dtypes
from nbhelpers.checks import ParameterError


def test_names_short_names_and_torch_dtypes_are_one_vocabulary():
    for name, short, torch_dtype in (("float32", "fp32", torch.float32), ("float16", "fp16", torch.float16),
                                     ("bfloat16", "bf16", torch.bfloat16)):
        assert dtypes.name(name) == dtypes.name(short) == dtypes.name(torch_dtype) == name
        assert dtypes.to_torch(short) is dtypes.to_torch(name) is torch_dtype
        assert dtypes.short(torch_dtype) == short
    assert dtypes.to_torch(None) is None


def test_unknown_dtypes_are_refused_with_the_choices():
    with pytest.raises(ParameterError, match="float16.*fp16"):
        dtypes.name("half")
    with pytest.raises(ParameterError):
        dtypes.name(torch.int8)
