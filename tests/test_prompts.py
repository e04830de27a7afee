"""polyalign.prompts: the built-in prompt sets and every kind of prompt source load_prompts reads."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from polyalign.errors import ConfigError, FileError
from polyalign.prompts import BUILTIN_SPLITS, SOURCE_FORMS, _parse_hf, builtin_prompts, load_prompts

HAVE_DATASETS = importlib.util.find_spec("datasets") is not None
DATA = Path(__file__).resolve().parents[1] / "src" / "polyalign" / "data" / "prompts"
COUNTS = {"train": 320, "heldout": 80}


# --- the built-in sets -------------------------------------------------------------------------------------------


def test_builtin_splits():
    assert BUILTIN_SPLITS == ("train", "heldout")


@pytest.mark.parametrize("split", BUILTIN_SPLITS)
def test_builtin_counts_and_lines(split):
    prompts = builtin_prompts(split)
    assert len(prompts) == COUNTS[split]
    assert len(set(prompts)) == len(prompts), "duplicate prompts within a split"
    assert len({p.casefold() for p in prompts}) == len(prompts), "prompts that differ only in case"
    for prompt in prompts:
        assert prompt == prompt.strip() and prompt, prompt
        assert 4 <= len(prompt.split()) <= 30, prompt


@pytest.mark.parametrize("split", BUILTIN_SPLITS)
def test_builtin_files_are_clean_utf8(split):
    raw = (DATA / f"{split}.txt").read_bytes()
    text = raw.decode("utf-8")  # strict: fails on anything but UTF-8
    assert not text.startswith("\ufeff") and "\r" not in text and "\t" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines), "blank line"
    assert lines == builtin_prompts(split), "importlib.resources reads the file as shipped"


def test_no_prompt_in_both_splits():
    train, heldout = builtin_prompts("train"), builtin_prompts("heldout")
    assert not {p.casefold() for p in train} & {p.casefold() for p in heldout}


def test_readme_states_counts_and_licence():
    readme = (DATA / "README.md").read_text("utf-8")
    assert "320" in readme and "80" in readme and "Apache-2.0" in readme


@pytest.mark.parametrize("split", ["test", "", "Train", "validation"])
def test_unknown_builtin_split(split):
    with pytest.raises(ConfigError, match=r"unknown built-in prompt split .*train, heldout"):
        builtin_prompts(split)
    with pytest.raises(ConfigError, match=r"train, heldout"):
        load_prompts(f"builtin:{split}")


# --- load_prompts: built-in and files ----------------------------------------------------------------------------


@pytest.mark.parametrize("split", BUILTIN_SPLITS)
def test_load_builtin(split):
    assert load_prompts(f"builtin:{split}") == builtin_prompts(split)
    assert load_prompts(f"  builtin:{split} ") == builtin_prompts(split)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def prompt_files(tmp_path) -> dict[str, Path]:
    return {
        "txt": _write(tmp_path / "p.txt", "first prompt\n\nsecond prompt\nthird prompt\n"),
        "jsonl": _write(tmp_path / "p.jsonl", "".join(json.dumps({"prompt": p, "id": i}) + "\n"
                                                     for i, p in enumerate(["first prompt", "second prompt",
                                                                            "third prompt"]))),
        "json": _write(tmp_path / "p.json", json.dumps(["first prompt", {"prompt": "second prompt"},
                                                        "third prompt"])),
    }


@pytest.mark.parametrize("kind", ["txt", "jsonl", "json"])
def test_load_files(prompt_files, kind):
    path = prompt_files[kind]
    expected = ["first prompt", "second prompt", "third prompt"]
    assert load_prompts(path) == expected
    assert load_prompts(str(path)) == expected
    assert load_prompts(str(path), limit=2) == expected[:2]


def test_limit():
    train = builtin_prompts("train")
    assert load_prompts("builtin:train", limit=1) == train[:1]
    assert load_prompts("builtin:train", limit=16) == train[:16]
    assert load_prompts("builtin:heldout", limit=10_000) == builtin_prompts("heldout")


@pytest.mark.parametrize("limit", [0, -3, 1.5, True, "5"])
def test_bad_limit(limit):
    with pytest.raises(ConfigError, match="prompt limit must be a positive whole number"):
        load_prompts("builtin:train", limit=limit)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="prompt source is empty"):
        load_prompts("  ")
    with pytest.raises(ConfigError, match="must be a string or a path, got int"):
        load_prompts(3)  # type: ignore[arg-type]
    with pytest.raises(FileError, match=r"did you mean builtin:train\?.*hf:DATASET"):
        load_prompts("train")
    with pytest.raises(FileError, match=r"does not exist.*builtin:train"):
        load_prompts(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="is a directory.*hf:"):
        load_prompts(tmp_path)
    with pytest.raises(ConfigError, match=r"must end in \.txt, \.jsonl, \.json"):
        load_prompts(_write(tmp_path / "p.csv", "prompt\nhello there\n"))
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_prompts(_write(tmp_path / "bad.json", "[1, 2"))
    with pytest.raises(ConfigError, match="expected a string or an object with a 'prompt' string"):
        load_prompts(_write(tmp_path / "ints.json", "[1, 2]"))
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts(_write(tmp_path / "empty.txt", "\n\n"))
    with pytest.raises(ConfigError, match="item 1 is blank"):
        load_prompts(_write(tmp_path / "blank.json", json.dumps(["a", "  "])))
    with pytest.raises(FileError, match="not UTF-8"):
        (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
        load_prompts(tmp_path / "latin.txt")


def test_source_forms_named():
    assert "builtin:train" in SOURCE_FORMS and "hf:DATASET" in SOURCE_FORMS and ".jsonl" in SOURCE_FORMS


# --- hf: specs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "parsed"), [
    ("hf:org/name", ("org/name", "train", "prompt", None)),
    ("hf:org/name:test", ("org/name", "test", "prompt", None)),
    ("hf:org/name:validation,column=question", ("org/name", "validation", "question", None)),
    ("hf:org/name,column=text,config=en", ("org/name", "train", "text", "en")),
    ("hf:./local/dir:train[:10]", ("./local/dir", "train[:10]", "prompt", None)),
    ("hf:C:\\data\\prompts:test", ("C:\\data\\prompts", "test", "prompt", None)),
])
def test_parse_hf(spec, parsed):
    assert _parse_hf(spec) == parsed


@pytest.mark.parametrize(("spec", "message"), [
    ("hf:", "names no dataset"),
    ("hf::train", "names no dataset"),
    ("hf:org/name:", "empty split"),
    ("hf:org/name,colum=text", "unknown option 'colum=text'.*column=NAME"),
    ("hf:org/name,column", "unknown option 'column'"),
    ("hf:org/name,column=", "option 'column' needs a value"),
])
def test_bad_hf_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_prompts(spec)


def test_hf_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ConfigError, match="needs the Hugging Face datasets library: pip install datasets"):
        load_prompts("hf:org/name")


@pytest.mark.skipif(HAVE_DATASETS, reason="datasets is installed")
def test_hf_datasets_not_installed():
    with pytest.raises(ConfigError, match="pip install datasets"):
        load_prompts("hf:./some/dataset:train,column=prompt")


needs_datasets = pytest.mark.skipif(not HAVE_DATASETS, reason="the optional datasets library is not installed")


@pytest.fixture
def saved_datasets(tmp_path) -> dict[str, Path]:
    import datasets

    datasets.disable_progress_bars()
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"prompt": ["p one", "p two", "p three"], "text": ["t1", "t2", "t3"]}).save_to_disk(
        str(single))
    splits = tmp_path / "splits"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"prompt": ["tr1", "tr2"]}),
        "test": datasets.Dataset.from_dict({"prompt": ["te1"]}),
    }).save_to_disk(str(splits))
    files = tmp_path / "files"
    files.mkdir()
    _write(files / "data.jsonl", "".join(json.dumps({"question": q}) + "\n" for q in ["q1", "q2"]))
    bad = tmp_path / "bad"
    datasets.Dataset.from_dict({"prompt": ["ok", None]}).save_to_disk(str(bad))
    return {"single": single, "splits": splits, "files": files, "bad": bad}


@needs_datasets
def test_hf_saved_datasets(saved_datasets):
    single, splits, files = saved_datasets["single"], saved_datasets["splits"], saved_datasets["files"]
    assert load_prompts(f"hf:{single}") == ["p one", "p two", "p three"]
    assert load_prompts(f"hf:{single},column=text", limit=2) == ["t1", "t2"]
    assert load_prompts(f"hf:{splits}") == ["tr1", "tr2"]
    assert load_prompts(f"hf:{splits}:test") == ["te1"]
    assert load_prompts(f"hf:{files},column=question") == ["q1", "q2"]  # a folder of data files: load_dataset


@needs_datasets
def test_hf_errors(saved_datasets, tmp_path):
    single, splits, files = saved_datasets["single"], saved_datasets["splits"], saved_datasets["files"]
    with pytest.raises(ConfigError, match="has no column 'question'; its columns are: prompt, text"):
        load_prompts(f"hf:{single},column=question")
    with pytest.raises(ConfigError, match="has no split 'validation'; its splits are: train, test"):
        load_prompts(f"hf:{splits}:validation")
    with pytest.raises(ConfigError, match="has no column 'prompt'; its columns are: question"):
        load_prompts(f"hf:{files}")
    with pytest.raises(ConfigError, match="item 1: expected a string, got NoneType"):
        load_prompts(f"hf:{saved_datasets['bad']}")
    for spec in (f"hf:{files}:validation,column=question", f"hf:{tmp_path / 'nothing-here'}"):
        with pytest.raises(ConfigError, match="^cannot load Hugging Face dataset") as info:
            load_prompts(spec)
        assert "\n" not in str(info.value)
