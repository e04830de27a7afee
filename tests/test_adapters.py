"""LoRA adapters that cannot be attached: one line naming the adapter, the model and the problem."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from polyalign.errors import ModelLoadError
from polyalign.experts import Expert
from polyalign.policies import MOD


def test_adapter_without_weights_says_which_file_is_missing(tiny_models, tiny_adapters, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(tiny_adapters[0] / "adapter_config.json", empty)
    with pytest.raises(ModelLoadError) as info:
        MOD([Expert(str(tiny_models[0])), Expert(str(tiny_models[0]), adapter=str(empty))])
    message = str(info.value)
    assert str(empty) in message and "adapter_model.safetensors (or adapter_model.bin) is missing" in message
    assert "Repo id" not in message


def test_adapter_of_the_wrong_shape_is_one_line(tiny_models, tiny_adapters, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_adapters[0], bad)
    weights = load_file(bad / "adapter_model.safetensors")
    save_file({k: torch.zeros(v.shape[0] + 1, v.shape[1]) for k, v in weights.items()},
              bad / "adapter_model.safetensors")
    with pytest.raises(ModelLoadError) as info:
        MOD([Expert(str(tiny_models[0])), Expert(str(tiny_models[0]), adapter=str(bad))])
    message = str(info.value)
    assert "\n" not in message and str(bad) in message and repr(str(tiny_models[0])) in message
    assert "size mismatch for" in message and "(and 7 more)" in message and "another base model" in message
