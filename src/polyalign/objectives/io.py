"""Reading (prompt, response, reference) rows from JSONL and writing score rows to JSONL or CSV."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from polyalign.errors import ConfigError
from polyalign.files import check_output_file, read_text, write_text


@dataclass
class Rows:
    """Parsed input: parallel lists, and the 1-based file line of each row for error messages."""

    prompts: list[str]
    responses: list[str]
    references: list[str | None] | None
    lines: list[int]
    records: list[dict]


def read_jsonl(path: str | Path, what: str = "input file") -> Rows:
    """Rows with string ``prompt`` and ``response`` and an optional string ``reference``; blank lines skipped."""
    path = Path(path)
    text = read_text(path, what)
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected an object with 'prompt' and 'response', got {type(record).__name__}")
        for key, required in (("prompt", True), ("response", True), ("reference", False)):
            if key not in record:
                if required:
                    raise ConfigError(f"{where}: missing {key!r}")
            elif not isinstance(record[key], str):
                raise ConfigError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}")
        records.append(record)
        lines.append(number)
    if not records:
        raise ConfigError(f"{what} {str(path)!r} has no rows; expected JSON lines with 'prompt' and 'response'")
    has_reference = any("reference" in record for record in records)
    return Rows(
        prompts=[record["prompt"] for record in records],
        responses=[record["response"] for record in records],
        references=[record.get("reference") for record in records] if has_reference else None,
        lines=lines,
        records=records,
    )


def check_output(path: str | Path | None, what: str = "scores output") -> None:
    """Fail before scoring, not after, on an output path of an unknown format or one that cannot be written."""
    if path is None:
        return
    if Path(path).suffix.lower() not in (".jsonl", ".csv"):
        raise ConfigError(f"{what} {str(path)!r} must end in .jsonl or .csv")
    check_output_file(path, what)


def write_scores(path: str | Path | None, rows: Rows, names: Sequence[str], scores: torch.Tensor) -> None:
    """JSONL (each input row plus ``"scores": {name: value}``) or, for a ``.csv`` path, one column per field."""
    values = scores.tolist()
    check_output(path)
    if path is not None and Path(path).suffix.lower() == ".csv":
        fields = ["line", "prompt", "response"] + (["reference"] if rows.references is not None else [])
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(fields + list(names))
        for line, record, row in zip(rows.lines, rows.records, values, strict=True):
            writer.writerow([line] + [record.get(f, "") for f in fields[1:]] + row)
        write_text(path, buffer.getvalue(), "scores output")
        return
    lines = [json.dumps({**record, "scores": dict(zip(names, row, strict=True))}, ensure_ascii=False) + "\n"
             for record, row in zip(rows.records, values, strict=True)]
    if path is None:
        sys.stdout.write("".join(lines))
    else:
        write_text(path, "".join(lines), "scores output")
