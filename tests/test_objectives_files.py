"""polyalign score's files: every bad path or encoding fails before any objective is built or scored."""

from __future__ import annotations

import json

import pytest

from polyalign.errors import ConfigError, FileError
from polyalign.objectives import scoring
from polyalign.objectives.normalize import Normalizer

ROW = json.dumps({"prompt": "a", "response": "b c"}) + "\n"


@pytest.fixture
def built(monkeypatch) -> list:
    """Records every objective set built: each test asserts nothing was, i.e. no work was done."""
    calls: list = []
    real = scoring.build
    monkeypatch.setattr(scoring, "build", lambda specs: calls.append(specs) or real(specs))
    return calls


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(ROW * 3)
    return path


def test_output_that_is_a_directory(tmp_path, source, built):
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(FileError, match="scores output .*out.jsonl' is a directory"):
        scoring.score_file(["length"], source, tmp_path / "out.jsonl")
    assert built == []


def test_save_normalizer_under_a_file(tmp_path, source, built):
    with pytest.raises(FileError, match="normalizer file \\(--save-normalizer\\) .* lies under .*in.jsonl', which "
                                        "is a file"):
        scoring.score_file(["length"], source, calibrate=source, save_normalizer=source / "norm.json")
    assert built == []


@pytest.mark.parametrize(("role", "message"), [
    ("input", "input file .*bad.jsonl' is UTF-16"),
    ("calibrate", "calibration file .*bad.jsonl' is UTF-16"),
])
def test_inputs_are_read_before_building(tmp_path, source, built, role, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(ROW.encode("utf-16"))
    kwargs = {"input": source, role: bad}
    with pytest.raises(FileError, match=message):
        scoring.score_file(["length"], **kwargs)
    assert built == []


def test_missing_calibration_and_normalizer_files(tmp_path, source, built):
    with pytest.raises(FileError, match="calibration file .*none.jsonl' does not exist"):
        scoring.score_file(["length"], source, calibrate=tmp_path / "none.jsonl")
    with pytest.raises(FileError, match="normalizer file .*none.json' does not exist"):
        scoring.score_file(["length"], source, normalizer=tmp_path / "none.json")
    assert built == []


def test_outputs_go_into_new_folders(tmp_path, source):
    out = tmp_path / "new" / "deeper" / "scores.csv"
    _, scores = scoring.score_file(["length"], source, out)
    assert out.read_text().splitlines()[0] == "line,prompt,response,length" and len(scores) == 3


def test_normalizer_files(tmp_path):
    normalizer = Normalizer.fixed({"length": (0, 10)})
    with pytest.raises(FileError, match="normalizer file .* is a directory"):
        normalizer.save(tmp_path)
    path = normalizer.save(tmp_path / "sub" / "n.json")
    assert Normalizer.load(path).ranges == normalizer.ranges
    path.write_bytes(b"\xff\xfe{\x00}\x00")
    with pytest.raises(FileError, match="normalizer file .*n.json' is UTF-16"):
        Normalizer.load(path)
    path.write_text('{"format": "other/9", "objectives": []}')
    with pytest.raises(ConfigError, match="normalizer file .*n.json': normalizer format 'other/9'"):
        Normalizer.load(path)
