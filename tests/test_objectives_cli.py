"""`polyalign objectives` and `polyalign score` through the real entry point."""

from __future__ import annotations

import csv
import json

import pytest

from polyalign.cli import main

ROWS = [
    {"prompt": "Tell me about cats.", "response": "I love cats, they are wonderful!", "reference": "Cats are pets."},
    {"prompt": "Tell me about cats.", "response": "I hate this, awful.", "reference": "Cats are small pets."},
    {"prompt": "Tell me about cats.", "response": "", "reference": "Cats."},
]


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def write_jsonl(path, rows, extra_lines=()):
    path.write_text("\n".join([json.dumps(r) for r in rows] + list(extra_lines)) + "\n")
    return path


def test_objectives_lists_every_builtin(capsys):
    code, out, _ = run(["objectives"], capsys)
    assert code == 0
    for kind in ("length", "concise", "sentiment", "readability", "rouge", "relevance", "safety", "profanity",
                 "hf", "nli", "python"):
        assert kind in out


def test_score_writes_jsonl_to_stdout(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    code, out, err = run(["score", "-o", "sentiment", "-o", "rouge", "--input", str(source), "--no-progress"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["response"] for r in rows] == [r["response"] for r in ROWS]
    assert rows[0]["scores"]["sentiment"] > 0 > rows[1]["scores"]["sentiment"]
    assert rows[2]["scores"] == {"sentiment": 0.0, "rouge": 0.0}
    assert "3 responses" in err


def test_score_csv_with_calibration_and_saved_normalizer(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    reference = write_jsonl(tmp_path / "ref.jsonl", [{"prompt": "p", "response": " ".join(["w"] * n)}
                                                     for n in range(21)])
    out_csv, saved = tmp_path / "out" / "scores.csv", tmp_path / "norm.json"
    code, _, err = run(["score", "-o", "length", "--input", str(source), "--output", str(out_csv),
                        "--calibrate", str(reference), "--save-normalizer", str(saved)], capsys)
    assert code == 0 and "scoring" in err
    table = list(csv.DictReader(out_csv.open()))
    assert [row["line"] for row in table] == ["1", "2", "3"]
    # reference lengths 0..20 -> 5th/95th percentiles 1 and 19
    assert [float(row["length"]) for row in table] == pytest.approx([(6 - 1) / 18, (4 - 1) / 18, -1 / 18])
    assert json.loads(saved.read_text())["objectives"][0]["low"] == 1.0
    # the saved normalizer reproduces the scores
    code, out, _ = run(["score", "-o", "length", "--input", str(source), "--normalize", str(saved),
                        "--no-progress"], capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["scores"]["length"] == pytest.approx(5 / 18)


@pytest.mark.parametrize(("lines", "args", "message"), [
    (['{"prompt": "a", "response": "b"}', "{oops"], [], "error: in.jsonl line 2: not valid JSON"),
    (['{"prompt": "a"}'], [], "error: in.jsonl line 1: missing 'response'"),
    (['{"prompt": "a", "response": 3}'], [], "error: in.jsonl line 1: 'response' must be a string, got int"),
    (["[1, 2]"], [], "error: in.jsonl line 1: expected an object"),
    ([], [], "has no rows"),
    (['{"prompt": "a", "response": "b"}'], ["-o", "sentimnt"], "error: unknown objective 'sentimnt'"),
    (['{"prompt": "a", "response": "b", "reference": "c"}', "", '{"prompt": "a", "response": "b"}'],
     ["-o", "rouge"], "error: objective 'rouge' needs a reference; row 1 has none (input line 3)"),
    (['{"prompt": "a", "response": "b"}'], ["-o", "hf:/no/such/model"], "error: model path not found: /no/such/model"),
    (['{"prompt": "a", "response": "b"}'], ["--output", "x.txt"], "must end in .jsonl or .csv"),
    (['{"prompt": "a", "response": "b"}'], ["--save-normalizer", "n.json"], "needs a calibration file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, lines, args, message):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines))
    argv = ["score", "--input", str(source), "--no-progress"] + (args if "-o" in args else ["-o", "sentiment"] + args)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_missing_input_file(tmp_path, capsys):
    code, _, err = run(["score", "-o", "sentiment", "--input", str(tmp_path / "none.jsonl")], capsys)
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
