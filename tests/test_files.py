"""polyalign.files: every unreadable input and unwritable output is one FileError naming the path and the fix."""

from __future__ import annotations

import pytest

from polyalign import files
from polyalign.errors import ConfigError, FileError


def test_reads_utf8_and_drops_a_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffcafé\n".encode())
    assert files.read_text(path, "prompts file") == "café\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("héllo\n".encode("utf-16"), "is UTF-16 \\(little-endian\\) text; save it as UTF-8"),
        ("héllo\n".encode("utf-16-be"), "looks like UTF-16 text .*save it as UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file"),
        ("caf\u00e9 cr\u00e8me".encode("latin-1"), "is not UTF-8 \\(byte 0xe9 at offset 3, probably Latin-1"),
    ],
)
def test_refuses_non_utf8_content(tmp_path, content, message):
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    with pytest.raises(FileError, match=message) as info:
        files.read_text(path, "prompts file")
    assert str(path) in str(info.value) and str(info.value).startswith("prompts file")


def test_missing_file_and_directory_are_told_apart(tmp_path):
    with pytest.raises(FileError, match="config file .*nope.yaml' does not exist"):
        files.read_text(tmp_path / "nope.yaml", "config file")
    with pytest.raises(FileError, match="is a directory; give the path of a file inside it") as info:
        files.read_text(tmp_path, "config file")
    assert "not found" not in str(info.value) and "does not exist" not in str(info.value)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileError, match="'.*f' is a file, not a directory"):
        files.read_text(tmp_path / "f" / "g.txt", "input file")


def test_file_errors_are_config_errors():
    assert issubclass(FileError, ConfigError)


def test_json_and_yaml_errors_name_the_place(tmp_path):
    bad_json, bad_yaml = tmp_path / "n.json", tmp_path / "c.yaml"
    bad_json.write_text('{"a": 1,\n "b": }')
    bad_yaml.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(FileError, match="normalizer file .*n.json' is not valid JSON: .* at line 2 column"):
        files.read_json(bad_json, "normalizer file")
    with pytest.raises(FileError, match="config file .*c.yaml' is not valid YAML: .*line 3"):
        files.read_yaml(bad_yaml, "config file")
    bad_yaml.write_text("a: 1\n")
    assert files.read_yaml(bad_yaml, "config file") == {"a": 1}


def test_output_checks_create_nothing(tmp_path):
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    assert files.check_output_file(out) == out
    assert files.check_output_dir(tmp_path / "run" / "x") == tmp_path / "run" / "x"
    assert list(tmp_path.iterdir()) == []


def test_output_file_that_is_a_directory_or_under_a_file(tmp_path):
    with pytest.raises(FileError, match="scores output .* is a directory; give a file name"):
        files.check_output_file(tmp_path, "scores output")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(FileError, match="lies under .*blocker', which is a file, not a directory"):
        files.check_output_file(blocker / "sub" / "out.csv", "scores output")
    with pytest.raises(FileError, match="output folder .*blocker' is a file, not a directory"):
        files.check_output_dir(blocker)
    with pytest.raises(FileError, match="lies under .*blocker', which is a file"):
        files.check_output_dir(blocker / "run")


def test_write_text_creates_the_folder(tmp_path):
    path = files.write_text(tmp_path / "a" / "b.json", "{}\n", "normalizer")
    assert path.read_text() == "{}\n"
    with pytest.raises(FileError, match="normalizer .* is a directory"):
        files.write_text(tmp_path / "a", "{}", "normalizer")
