"""Reading and writing the files a user names: one place that turns every OS and encoding problem into a
:class:`~polyalign.errors.FileError` naming the path, what it should be and what to do.

Inputs must be UTF-8 text (a UTF-8 byte-order mark is accepted and dropped); outputs are checked before
any work starts (:func:`check_output_file`, :func:`check_output_dir`) so that a bad path never costs a run.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from polyalign.errors import FileError

_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
_RESAVE = "save it as UTF-8 text"


def as_path(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path`, ``~`` expanded; a name that no file can have is a :class:`FileError`."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str):
        raise FileError(f"{what} must be a path, got {type(path).__name__}")
    if "\x00" in text:
        raise FileError(f"{what} {text!r} holds a NUL character, which no path can hold")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~name where there is no user "name"
        raise FileError(f"{what} {text!r}: {text.split('/')[0]!r} names no user's home directory") from None


def _kind(path: Path, what: str) -> str | None:
    """``"dir"``, ``"file"`` or None when nothing is there; a path the system refuses (a name too long, a loop of
    links, no permission to look) is a :class:`FileError` naming the reason."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise FileError(f"{what} {str(path)!r} cannot be used: {exc.strerror or exc}") from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def check_input_file(path: str | Path, what: str) -> Path:
    """``path`` as a :class:`Path` if it is an existing file; otherwise a :class:`FileError` saying why not."""
    path = as_path(path, what)
    kind = _kind(path, what)
    if kind == "dir":
        raise FileError(f"{what} {str(path)!r} is a directory; give the path of a file inside it")
    if kind is None:
        parent = _nearest_existing(path, what)
        if parent is not None and _kind(parent, what) != "dir":
            raise FileError(f"{what} {str(path)!r} does not exist: {str(parent)!r} is a file, not a directory")
        raise FileError(f"{what} {str(path)!r} does not exist")
    return path


def read_bytes(path: str | Path, what: str) -> bytes:
    """The raw content of an existing, readable file."""
    path = check_input_file(path, what)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def decode_text(data: bytes, path: str | Path, what: str) -> str:
    """``data`` decoded as UTF-8; UTF-16/32, binary and other encodings are refused with the reason."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise FileError(f"{what} {str(path)!r} is {name} text; {_RESAVE}")
    if b"\x00" in data[:8192]:
        even, odd = data[0:8192:2].count(0), data[1:8192:2].count(0)
        if min(even, odd) == 0 and max(even, odd) > len(data[:8192]) // 4:
            raise FileError(f"{what} {str(path)!r} looks like UTF-16 text (no byte-order mark); {_RESAVE}")
        raise FileError(f"{what} {str(path)!r} is a binary file (it holds NUL bytes); it should be UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        guess = ""
        try:
            data.decode("cp1252")
            guess = ", probably Latin-1/Windows-1252"
        except UnicodeDecodeError:
            pass
        raise FileError(f"{what} {str(path)!r} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}"
                        f"{guess}); {_RESAVE}") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The content of a UTF-8 text file; ``what`` names it in errors (e.g. ``"prompts file"``)."""
    return decode_text(read_bytes(path, what), path, what)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """A UTF-8 JSON file, parsed; a syntax error names the line and column."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileError(f"{what} {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                        f"{exc.colno}") from None


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """A UTF-8 YAML file, parsed (safe loader); a syntax error names the line and column."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FileError(f"{what} {str(path)!r} is not valid YAML: {problem}{where}") from None


def _nearest_existing(path: Path, what: str) -> Path | None:
    """``path`` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if _kind(candidate, what) is not None:
            return candidate
    return None


def _check_creatable(path: Path, what: str) -> None:
    """The closest existing ancestor of ``path`` is a directory we may create entries in."""
    existing = _nearest_existing(path.parent, what)
    if existing is None:
        return
    if _kind(existing, what) != "dir":
        raise FileError(f"{what} {str(path)!r} lies under {str(existing)!r}, which is a file, not a directory; "
                        "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileError(f"{what} {str(path)!r} cannot be created: no write permission in {str(existing)!r}; "
                        "choose another path")


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at ``path`` (nothing is created)."""
    path = as_path(path, what)
    kind = _kind(path, what)
    if kind == "dir":
        raise FileError(f"{what} {str(path)!r} is a directory; give a file name, e.g. {str(path / 'out')!r}")
    if kind is not None:
        if not os.access(path, os.W_OK):
            raise FileError(f"{what} {str(path)!r} exists and is not writable; choose another path")
        return path
    _check_creatable(path, what)
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is or can become a writable directory (nothing is created)."""
    path = as_path(path, what)
    kind = _kind(path, what)
    if kind is not None:
        if kind != "dir":
            raise FileError(f"{what} {str(path)!r} is a file, not a directory; choose another path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise FileError(f"{what} {str(path)!r} is not writable; choose another path")
        return path
    _check_creatable(path, what)
    return path


def make_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) or raise a :class:`FileError` saying why it cannot be."""
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"cannot create {what} {str(path)!r}: {exc.strerror or exc}") from None
    return path


def write_text(path: str | Path, text: str, what: str = "output file") -> Path:
    """Write UTF-8 ``text`` to ``path``, creating its folder; OS errors become a :class:`FileError`."""
    path = check_output_file(path, what)
    make_dir(path.parent, f"folder of the {what}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FileError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    return path
