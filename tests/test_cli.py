"""The command line: real runs on tiny models, and one clear line for every bad input."""

from __future__ import annotations

import json

import pytest

from polyalign.cli import main


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def persona_args(tiny_models):
    return ["generate", "--model", str(tiny_models[1]), "--persona", "terse=be terse and brief.",
            "--persona", "warm=be warm, kind and enthusiastic!", "--max-new-tokens", "5"]


def test_generate_prints_responses_and_json(persona_args, capsys):
    code, out, _ = run([*persona_args, "-w", "0.5,0.5", "--json", "hello world"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["prompt"] == "hello world" and len(record["token_ids"]) <= 5
    assert record["weights"] == [0.5, 0.5] and len(record["ref_logprobs"]) == len(record["token_ids"])


def test_generate_reads_a_prompt_file_and_stdin(persona_args, capsys, tmp_path, monkeypatch):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "tell me a story"}\n')
    code, out, _ = run([*persona_args, "-w", "1,0", "--json", "--prompt-file", str(prompts)], capsys)
    assert code == 0 and [json.loads(ln)["prompt"] for ln in out.splitlines()] == ["hello", "tell me a story"]
    code, out, _ = run([*persona_args, "-w", "1,0", "--json"], capsys, stdin="from stdin", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["prompt"] == "from stdin"
    for name, text in (("prompts.json", '["hello", {"prompt": "again"}]'), ("prompts.txt", "hello\n\nagain\n")):
        (tmp_path / name).write_text(text)
        code, out, _ = run([*persona_args, "-w", "1,0", "--json", "--prompt-file", str(tmp_path / name)], capsys)
        assert code == 0 and [json.loads(ln)["prompt"] for ln in out.splitlines()] == ["hello", "again"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.jsonl", '{"prompt": "ok"}\n{not json\n', "is not valid JSON"),
    ("bad.jsonl", '{"text": "no prompt key"}\n', "item 0: expected a string or an object with a 'prompt' string"),
    ("bad.json", '{"prompt": "not a list"}', "must hold a list of prompts"),
])
def test_bad_prompt_files_are_one_line_and_exit_2(persona_args, capsys, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    code, _, err = run([*persona_args, "-w", "1,0", "--prompt-file", str(tmp_path / name)], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_stream_prints_the_same_text(persona_args, capsys):
    _, plain, _ = run([*persona_args, "-w", "0.3,0.7", "hello world"], capsys)
    code, streamed, _ = run([*persona_args, "-w", "0.3,0.7", "--stream", "hello world"], capsys)
    assert code == 0 and streamed == plain


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-w", "0.5,x", "hi"], "comma-separated numbers"),
        (["-w", "0.5", "hi"], "expected 2 weights"),
        (["-w", "0,0", "hi"], "all weights are zero"),
        (["-w", "nan,1", "hi"], "finite"),
        (["-w", "0.5,0.5", "   "], "prompt 0 is empty"),
        (["hi"], "--weights is required"),
        (["-w", "0.5,0.5", "--strategy", "nope", "hi"], "--strategy"),
        (["-w", "0.5,0.5", "--top-p", "2", "hi"], "--top-p"),
        (["-w", "0.5,0.5", "--persona", "broken", "hi"], "NAME=VALUE"),
        (["-w", "0.5,0.5", "--reference", "/no/such/model", "hi"], "model path not found"),
        (["-w", "0.5,0.5", "--prompt-file", "/no/such/file"], "does not exist"),
        (["-w", "0.5,0.5", "--adapter", "x=/no/adapter", "hi"], "LoRA adapter not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(persona_args, capsys, extra, message):
    code, out, err = run([*persona_args, *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_no_experts_is_a_clear_error(tiny_models, capsys):
    code, _, err = run(["generate", "--model", str(tiny_models[0]), "-w", "1", "hi"], capsys)
    assert code == 2 and "no experts" in err


def test_the_command_line_starts_without_importing_transformers():
    """transformers takes seconds to import; commands that need no model (objectives, score, --help) skip it."""
    import subprocess
    import sys

    code = "import sys, polyalign.cli; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
