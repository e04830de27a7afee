"""The model cache outside the happy path: conversions that fail, race or are interrupted; specs that are
local paths; hub failures in one line; releasing loaded models."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import pytest

from polyalign import models
from polyalign.errors import ModelLoadError
from polyalign.models import MARKER, cached_conversion
from tests.tiny import save_model


def fake_convert(calls: list, delay: float = 0.0):
    def convert(folder):
        calls.append(folder)
        time.sleep(delay)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"weights")

    return convert


def test_converts_once_and_marks_the_folder_complete(tmp_path):
    calls: list = []
    target = tmp_path / "gguf" / "m-1"
    assert cached_conversion(target, fake_convert(calls)) == target
    assert (target / MARKER).is_file() and (target / "model.safetensors").is_file()
    assert cached_conversion(target, fake_convert(calls)) == target
    assert len(calls) == 1
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_folder_without_the_marker_is_redone(tmp_path):
    target = tmp_path / "m-1"
    target.mkdir()
    (target / "config.json").write_text("{}")  # e.g. a conversion killed after its first file
    calls: list = []
    cached_conversion(target, fake_convert(calls))
    assert len(calls) == 1 and (target / MARKER).is_file() and (target / "model.safetensors").is_file()


def test_leftovers_of_killed_runs_are_removed_and_a_failure_leaves_nothing(tmp_path):
    target = tmp_path / "m-1"
    stale = tmp_path / ".tmp-m-1-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    other = tmp_path / ".tmp-other-model-xyz"  # another target's conversion in progress: not ours to remove
    other.mkdir()

    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_conversion(target, broken)
    assert not stale.exists() and other.exists() and not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-m-1")] == []


def test_an_unwritable_cache_fails_before_converting(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("POLYALIGN_CACHE", str(blocker / "cache"))
    calls: list = []
    with pytest.raises(ModelLoadError, match="model cache .* is not writable .*set POLYALIGN_CACHE") as info:
        cached_conversion(models.cache_dir() / "gguf" / "m-1", fake_convert(calls))
    assert calls == [] and str(blocker / "cache") in str(info.value)


def test_embedded_model_with_an_unwritable_cache_is_caught_by_check_spec(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "embedded_gguf", lambda name: gguf)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("POLYALIGN_CACHE", str(blocker))
    with pytest.raises(ModelLoadError, match="POLYALIGN_CACHE"):
        models.check_spec(models.DEFAULT_MODEL)


def test_racing_conversions_convert_once(tmp_path):
    calls: list = []
    target = tmp_path / "gguf" / "m-1"
    errors: list = []

    def run():
        try:
            cached_conversion(target, fake_convert(calls, delay=0.2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(calls) == 1 and (target / MARKER).is_file()


@pytest.mark.parametrize("spec", ["models/nope", "models/nope/deeper"])
def test_a_path_under_an_existing_folder_is_local(tmp_path, monkeypatch, spec):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="model path not found: models/nope.*'models' exists here"):
        models.locate(spec)
    assert time.perf_counter() - start < 5  # no hub lookup


def test_a_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file, not a model directory"):
        models.locate(str(tmp_path / "weights.txt"))


def test_hub_id_offline_is_one_line_and_checked_up_front(monkeypatch, capsys, caplog):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: the env is too late
    with pytest.raises(ModelLoadError, match="neither a local path nor in the Hugging Face cache"):
        models.check_spec("polyalign-test/no-such-model")
    with pytest.raises(ModelLoadError) as info:
        models.load_tokenizer("polyalign-test/no-such-model-2")
    assert "\n" not in str(info.value) and "polyalign-test/no-such-model-2" in str(info.value)


def test_hub_retry_warnings_are_silenced(monkeypatch, capsys, caplog):
    class NoNetwork:
        @staticmethod
        def from_pretrained(source, **kwargs):
            for attempt in range(5):
                logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry %d/5].", attempt)
            raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.\nMore lines.")

    level = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.WARNING), pytest.raises(ModelLoadError) as info:
        models.pretrained(NoNetwork, "someorg/somemodel", "a causal LM")
    assert str(info.value) == ("could not load a causal LM from 'someorg/somemodel' (not a local path; as a hub id it "
                               "needs network access or the HF cache): We couldn't connect to 'https://huggingface.co'.")
    assert "Retrying" not in caplog.text + capsys.readouterr().err
    assert logging.getLogger("huggingface_hub").level == level  # restored


def test_release_and_scope_free_models(tiny_models, tiny_tokenizer, tmp_path):
    spec = str(save_model(tmp_path / "fresh", tiny_tokenizer, seed=5))  # loaded by no other test
    outside = models.load_model(str(tiny_models[1]))
    with models.scope():
        loaded = models.load_model(spec)
        ref = weakref.ref(loaded.model)
        assert models.load_model(spec) is loaded
    assert models.load_model(str(tiny_models[1])) is outside  # loaded before the scope: kept
    del loaded
    gc.collect()
    assert ref() is None
    again = models.load_model(spec)
    assert models.release(spec) == 1 and models.load_model(spec) is not again


def test_load_tokenizer_gives_each_setting_its_own_object(tiny_models):
    spec = str(tiny_models[0])
    plain = models.load_tokenizer(spec)
    left = models.load_tokenizer(spec, padding_side="left", truncation_side="left")
    assert left is not plain and (plain.padding_side, plain.truncation_side) == ("right", "right")
    assert (left.padding_side, left.truncation_side) == ("left", "left")
    assert models.load_tokenizer(spec, padding_side="left", truncation_side="left") is left


def test_a_file_where_the_converted_folder_belongs_is_replaced(tmp_path):
    target = tmp_path / "m-1"
    target.write_text("junk")
    calls: list = []
    assert cached_conversion(target, fake_convert(calls)).is_dir() and (target / MARKER).is_file()
