"""Where a run gets its prompts: the one function, :func:`load_prompts`, that turns a prompt source into a list.

A source is one of

- ``builtin:train`` or ``builtin:heldout``: the prompt sets shipped with polyalign (:data:`BUILTIN_SPLITS`);
  320 and 80 instructions written for the project, Apache-2.0, ``polyalign/data/prompts/README.md``;
- a path to a ``.txt`` (one prompt per line), ``.jsonl`` (a ``"prompt"`` field per line) or ``.json`` (a list of
  strings or of objects with a ``"prompt"`` field) file, read by :func:`polyalign.interface.read_prompts`;
- ``hf:DATASET[:SPLIT][,column=NAME][,config=NAME]``: one column of a Hugging Face dataset, by hub id or local
  folder (a folder written by ``Dataset.save_to_disk`` or one holding data files); split ``train`` and column
  ``prompt`` unless given. This needs the optional ``datasets`` library (``pip install datasets``).

Every problem (an unknown split, a missing file or column, a dataset that cannot be loaded, an empty prompt) is a
:class:`~polyalign.errors.ConfigError` whose one-line message says what to change.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from polyalign.errors import ConfigError, FileError

BUILTIN_SPLITS: tuple[str, ...] = ("train", "heldout")
"""The built-in prompt sets, for ``builtin:SPLIT``: ``train`` (320 prompts) and ``heldout`` (80)."""

FILE_SUFFIXES: tuple[str, ...] = (".txt", ".jsonl", ".json")
"""The prompt file formats :func:`load_prompts` reads."""

HF_DEFAULT_SPLIT = "train"
HF_DEFAULT_COLUMN = "prompt"

SOURCE_FORMS = ("builtin:train, builtin:heldout, a .txt/.jsonl/.json file, "
                "or hf:DATASET[:SPLIT][,column=NAME]")
"""The accepted forms of a prompt source, as error messages list them."""

_HF_OPTIONS = ("column", "config")
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def builtin_prompts(split: str) -> list[str]:
    """The built-in prompts of ``split`` (one of :data:`BUILTIN_SPLITS`), in file order.

    Raises:
        ConfigError: ``split`` is not a built-in split, or the data file is missing from this install.
    """
    if split not in BUILTIN_SPLITS:
        raise ConfigError(f"unknown built-in prompt split {split!r}; the built-in splits are: "
                          f"{', '.join(BUILTIN_SPLITS)} (e.g. builtin:{BUILTIN_SPLITS[0]})")
    try:
        text = resources.files("polyalign.data").joinpath("prompts", f"{split}.txt").read_text("utf-8")
    except (OSError, ModuleNotFoundError) as exc:  # a broken install: the data files did not ship
        raise ConfigError(f"built-in prompts {split!r} are missing from this polyalign install ({exc}); "
                          "reinstall polyalign") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_prompts(source: str | Path, *, limit: int | None = None) -> list[str]:
    """The prompts of ``source``: ``builtin:SPLIT``, a .txt/.jsonl/.json path, or ``hf:DATASET[:SPLIT][,column=NAME]``.

    A :class:`~pathlib.Path` is always read as a file; a string is a file path unless it starts with ``builtin:``
    or ``hf:`` (write ``./hf:name.txt`` for a file whose name starts so). ``limit`` keeps the first ``limit``
    prompts (all when ``None``). The result is a non-empty list of non-blank strings, in source order.

    Raises:
        ConfigError: a malformed source or ``limit``, an unreadable file, a dataset that cannot be loaded, a
            missing column, a non-string or blank prompt, or a source that holds no prompts.
    """
    limit = _check_limit(limit)
    if isinstance(source, Path):
        where = str(source)
        prompts = _file_prompts(source)
    elif isinstance(source, str):
        where = source.strip()
        if not where:
            raise ConfigError(f"the prompt source is empty; give one of: {SOURCE_FORMS}")
        if where.startswith("builtin:"):
            prompts = builtin_prompts(where[len("builtin:"):].strip())
        elif where.startswith("hf:"):
            prompts = _hf_prompts(where, limit)
        else:
            prompts = _file_prompts(Path(where))
    else:
        raise ConfigError(f"a prompt source must be a string or a path, got {type(source).__name__}; "
                          f"give one of: {SOURCE_FORMS}")
    if limit is not None:
        prompts = prompts[:limit]
    return _check_loaded(prompts, where)


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"prompt limit must be a positive whole number (or None for all prompts), got {limit!r}")
    return limit


def _check_loaded(prompts: list[Any], where: str) -> list[str]:
    if not prompts:
        raise ConfigError(f"prompt source {where!r} holds no prompts")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt source {where!r}, item {i}: expected a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ConfigError(f"prompt source {where!r}, item {i} is blank: every prompt needs some text")
    return list(prompts)


def _file_prompts(path: Path) -> list[str]:
    from polyalign.interface import read_prompts

    path = path.expanduser()
    if path.is_dir():
        raise ConfigError(f"prompt source {str(path)!r} is a directory; give a .txt/.jsonl/.json file inside it, "
                          f"or hf:{path} if it holds a Hugging Face dataset")
    if path.suffix not in FILE_SUFFIXES:
        if not path.exists():
            hint = f" (did you mean builtin:{path}?)" if str(path) in BUILTIN_SPLITS else ""
            raise FileError(f"prompt source {str(path)!r} is not an existing file{hint}; give one of: {SOURCE_FORMS}")
        raise ConfigError(f"prompts file {str(path)!r} must end in {', '.join(FILE_SUFFIXES)} (one prompt per "
                          "line, a 'prompt' field per line, or a JSON list); rename it or convert it")
    try:
        return read_prompts(path)
    except FileError as exc:
        if path.exists():
            raise
        raise FileError(f"{exc}; a prompt source is one of: {SOURCE_FORMS}") from None


def _parse_hf(spec: str) -> tuple[str, str, str, str | None]:
    """``hf:DATASET[:SPLIT][,column=NAME][,config=NAME]`` as (dataset, split, column, config)."""
    body = spec[len("hf:"):]
    head, *options = body.split(",")
    column, config = HF_DEFAULT_COLUMN, None
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in _HF_OPTIONS or not eq:
            raise ConfigError(f"prompt source {spec!r}: unknown option {option.strip()!r}; the options are "
                              "column=NAME and config=NAME, e.g. hf:DATASET:train,column=prompt")
        if not value:
            raise ConfigError(f"prompt source {spec!r}: option {key!r} needs a value, e.g. {key}=NAME")
        if key == "column":
            column = value
        else:
            config = value
    skip = 2 if _WINDOWS_DRIVE.match(head) else 0  # C:\data\prompts is a path, not dataset 'C' split '\data...'
    cut = head.find(":", skip)
    name, split = (head, HF_DEFAULT_SPLIT) if cut < 0 else (head[:cut], head[cut + 1:])
    name, split = name.strip(), split.strip()
    if not name:
        raise ConfigError(f"prompt source {spec!r} names no dataset; write hf:DATASET[:SPLIT][,column=NAME], "
                          "e.g. hf:./my_prompts:train,column=prompt")
    if not split:
        raise ConfigError(f"prompt source {spec!r} has an empty split after ':'; write e.g. hf:{name}:train")
    return name, split, column, config


def load_hf_split(name: str, split: str, config: str | None, spec: str, kind: str = "prompt"):
    """One split of a Hugging Face dataset: a folder saved by ``save_to_disk`` or a dataset the ``datasets`` library
    loads (its cache, or the hub where reachable); every failure becomes one :class:`ConfigError` naming it."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{kind} source {spec!r} needs the Hugging Face datasets library: "
                          "pip install datasets") from None
    from polyalign.models import first_line

    what = f"Hugging Face dataset {name!r} (split {split!r})"
    folder = Path(name).expanduser()
    try:
        if folder.is_dir() and any((folder / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
            data = datasets.load_from_disk(str(folder))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise ConfigError(f"{what} has no split {split!r}; its splits are: {', '.join(data)}")
                data = data[split]
        else:
            data = datasets.load_dataset(name, name=config, split=split)
    except ConfigError:
        raise
    except Exception as exc:  # any loader failure becomes one line the user can act on
        raise ConfigError(f"cannot load {what}: {first_line(exc)}") from None
    return data, what


def _hf_prompts(spec: str, limit: int | None) -> list[Any]:
    name, split, column, config = _parse_hf(spec)
    data, what = load_hf_split(name, split, config, spec)
    columns = list(getattr(data, "column_names", None) or [])
    if column not in columns:
        raise ConfigError(f"{what} has no column {column!r}; its columns are: {', '.join(columns) or '(none)'}; "
                          f"choose one with ,column=NAME")
    if limit is not None and hasattr(data, "select"):
        data = data.select(range(min(limit, len(data))))
    return list(data[column])
