"""Every bad input to the installed ``polyalign`` executable: exit code 2, one ``error:`` line, no traceback,
and no file touched (issue 11).

Each case runs the real console script in its own folder, holding the files the case needs. The subprocesses
run once per module, two at a time, and each test checks one outcome: the exit code, stderr being exactly one
line that starts with ``error:`` and names the problem, and every file of the folder (and of the shared tiny
models) having the same bytes and modification time after the run as before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

EXE = shutil.which("polyalign", path=os.path.dirname(sys.executable)) or shutil.which("polyalign")
"""The console script installed next to this interpreter (not a version manager's shim, which costs ~1 s a call)."""
pytestmark = pytest.mark.skipif(EXE is None, reason="the polyalign executable is not on PATH: "
                                                    "pip install -e . installs it")

DIR = object()
"""A file-table value: make a directory there."""
MAX_PROMPT = "hello world " * 300
"""About 2400 tokens: far beyond the tiny models' 256 positions."""


@dataclass(frozen=True)
class Case:
    """``polyalign ARGS`` run in a folder holding ``files``; stderr must name ``message``.

    Args, file contents and env values may use @MODEL@ (a tiny checkpoint), @NOWEIGHTS@ (a LoRA adapter folder
    without weights), @BADSHAPES@ (a LoRA adapter for a model half as wide) and @CASE@ (the case's folder).
    """

    id: str
    args: tuple[str | bytes, ...]
    message: str
    files: Mapping[str, str | bytes | object] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes | None = None


def case(id: str, args: str | list[str | bytes], message: str, files: Mapping | None = None,
         env: Mapping | None = None, stdin: bytes | None = None, xfail: str | None = None):
    """One table row; ``args`` as a string is split on spaces (bytes arguments reach argv as they are)."""
    argv = tuple(args.split() if isinstance(args, str) else args)
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(id, argv, message, files or {}, env or {}, stdin), id=id, marks=marks)


GEN = "generate -m @MODEL@ --persona terse=be-terse --persona warm=be-warm --max-new-tokens 2"
"""A generate command that runs (test_stream_json_prints_one_json_object_per_token_event) until a case spoils it."""
ROWS = '{"prompt": "p", "response": "r"}\n'
PLUGIN = """
def boom(prompts, responses):
    raise RuntimeError("kaput")


def no_arguments():
    return []


def policy_factory(**options):
    raise RuntimeError("factory kaput")
"""
EVALUATION = {
    "objectives": ["concise", "sentiment"],
    "methods": [{"name": "mod", "kind": "mod", "model": "@MODEL@",
                 "personas": {"concise": "be terse", "sentiment": "be warm"}}],
    "prompts": ["hello"],
    "weights": {"simplex": 2},
    "generation": {"max_new_tokens": 2},
    "n_bootstrap": 10,
    "output_dir": "run",
}


def evaluation(**changes) -> str:
    """The YAML of a small evaluation config with ``changes`` (a value of None deletes the key)."""
    data = {**EVALUATION, **changes}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)


def two_methods(**changes) -> str:
    plain = {"name": "plain", "kind": "plain", "model": "@MODEL@"}
    return evaluation(methods=[*EVALUATION["methods"], plain], **changes)


CASES = [
    # --- usage errors of the command line (typer/click, whichever click typer vendors) ---------------------
    case("usage-unknown-command", "frobnicate", "No such command 'frobnicate'"),
    case("usage-unknown-option", f"{GEN} --bogus hi", "No such option: --bogus"),
    case("usage-missing-option-value", f"{GEN} hi --weights", "Option '--weights' requires an argument"),
    case("usage-missing-required-option", "score -o sentiment", "Missing option '--input'"),
    case("usage-extra-argument", f"{GEN} -w 1,1 one two", "unexpected extra argument(s) (two)"),
    case("usage-not-an-integer", f"{GEN} --max-new-tokens abc -w 1,1 hi", "'--max-new-tokens'"),
    case("usage-batch-size-0", "score -o sentiment -i rows.jsonl --batch-size 0", "'--batch-size'",
         {"rows.jsonl": ROWS}),
    case("usage-bad-choice", f"{GEN} --strategy nope -w 1,1 hi", "--strategy: Input should be 'greedy'"),
    # --- weights --------------------------------------------------------------------------------------------
    case("weights-space-separated", [*GEN.split(), "-w", "1 2", "hi"], "comma-separated numbers"),
    case("weights-space-inside-comma-list", [*GEN.split(), "-w", "1 2,3", "hi"], "comma-separated numbers"),
    case("weights-nan", f"{GEN} -w nan,1 hi", "must be finite"),
    case("weights-inf", f"{GEN} -w 1,inf hi", "must be finite"),
    case("weights-wrong-count", f"{GEN} -w 1,2,3 hi", "expected 2 weights, one per objective ['terse', 'warm']"),
    case("weights-empty", [*GEN.split(), "-w", "", "hi"], "--weights is required: 2 numbers"),
    case("weights-too-large", f"{GEN} -w 1e308,1e308 hi", "overflowed float64"),
    # --- divergences ----------------------------------------------------------------------------------------
    case("divergence-unknown", f"{GEN} -w 1,1 --divergence nope hi", "unknown divergence 'nope'"),
    case("divergence-tv", f"{GEN} -w 1,1 --divergence tv hi", "'total_variation' is not a barrier function"),
    case("divergence-chi2", f"{GEN} -w 1,1 --divergence chi2 hi", "'chi_squared' is not a barrier function"),
    case("divergence-alpha-1.5", f"{GEN} -w 1,1 --divergence alpha:1.5 hi", "strictly between 0 and 1"),
    # --- GenerationConfig values ----------------------------------------------------------------------------
    case("config-temperature-inf", f"{GEN} -w 1,1 --temperature inf hi", "--temperature: Input should be a finite"),
    case("config-temperature-0", f"{GEN} -w 1,1 --temperature 0 hi", "--temperature: Input should be greater"),
    case("config-top-p-2", f"{GEN} -w 1,1 --top-p 2 hi", "--top-p: Input should be less than or equal to 1"),
    case("config-seed-beyond-64-bits", f"{GEN} -w 1,1 --seed {2**64} hi", "--seed"),
    case("config-num-beams-100000", f"{GEN} -w 1,1 --strategy beam --num-beams 100000 hi", "--num-beams"),
    case("config-device-meta", f"{GEN} -w 1,1 --device meta hi", "meta"),
    case("config-device-mps", f"{GEN} -w 1,1 --device mps hi", "mps"),
    case("stream-beam", f"{GEN} -w 1,1 --stream --strategy beam hi", "streaming needs greedy or sample"),
    case("stream-two-responses-as-text", f"{GEN} -w 1,1 --stream --strategy sample --n 2 hi", "--json"),
    # --- files that are not what they should be -------------------------------------------------------------
    case("file-prompts-missing", f"{GEN} -w 1,1 --prompt-file nope.txt", "'nope.txt' does not exist"),
    case("file-prompts-directory", f"{GEN} -w 1,1 --prompt-file folder", "'folder' is a directory",
         {"folder": DIR}),
    case("file-prompts-binary", f"{GEN} -w 1,1 --prompt-file p.txt", "is a binary file",
         {"p.txt": bytes(range(256))}),
    case("file-prompts-utf16", f"{GEN} -w 1,1 --prompt-file p.txt", "is UTF-16 (little-endian) text",
         {"p.txt": "hello\n".encode("utf-16")}),
    case("file-prompts-latin1", f"{GEN} -w 1,1 --prompt-file p.txt", "is not UTF-8 (byte 0xe9",
         {"p.txt": "café\n".encode("latin-1")}),
    case("file-prompts-empty", f"{GEN} -w 1,1 --prompt-file p.txt", "no prompts given", {"p.txt": ""}),
    case("file-prompts-bad-jsonl", f"{GEN} -w 1,1 --prompt-file p.jsonl", "is not valid JSON",
         {"p.jsonl": '{"prompt": "ok"}\n{not json\n'}),
    case("file-config-bad-yaml", "evaluate -c c.yaml", "is not valid YAML", {"c.yaml": "objectives: [a\nx: y: z\n"}),
    case("file-config-unknown-key", "evaluate -c c.yaml", "bogus_key: Extra inputs are not permitted",
         {"c.yaml": evaluation(bogus_key=1)}),
    case("file-config-directory", "evaluate -c c.yaml", "'c.yaml' is a directory", {"c.yaml": DIR}),
    case("file-results-json-not-ours", "evaluate -c c.yaml", "is not a polyalign results file",
         {"c.yaml": evaluation(), "run": DIR, "run/results.json": '{"a": 1}'}),
    case("file-score-input-binary", "score -o sentiment -i rows.jsonl", "is a binary file",
         {"rows.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00"}),
    case("file-normalizer-not-ours", "score -o sentiment -i rows.jsonl --normalize n.json",
         "not a polyalign normalizer", {"rows.jsonl": ROWS, "n.json": "{}"}),
    # --- outputs: checked before any work, existing files left alone ----------------------------------------
    case("output-evaluate-under-a-file", "evaluate -c c.yaml -o afile/run", "lies under 'afile', which is a file",
         {"c.yaml": evaluation(), "afile": "keep me"}),
    case("output-demo-under-a-file", "demo -m @MODEL@ --out afile/runs", "lies under 'afile', which is a file",
         {"afile": "keep me"}),
    case("output-score-is-a-directory", "score -o sentiment -i rows.jsonl --output out.csv", "is a directory",
         {"rows.jsonl": ROWS, "out.csv": DIR, "out.csv/old.csv": "old scores"}),
    case("output-save-normalizer-under-a-file",
         "score -o sentiment -i rows.jsonl --calibrate rows.jsonl --save-normalizer afile/n.json",
         "normalizer file (--save-normalizer) 'afile/n.json' lies under 'afile'", {"rows.jsonl": ROWS, "afile": "x"}),
    case("output-score-kept-on-a-bad-objective", "score -o nope -i rows.jsonl --output s.csv",
         "unknown objective 'nope'", {"rows.jsonl": ROWS, "s.csv": "old scores\n"}),
    case("output-model-cache-under-a-file", "demo --out runs", "model cache",
         {"afile": "x"}, env={"POLYALIGN_CACHE": "@CASE@/afile/cache"}),
    # --- objectives -----------------------------------------------------------------------------------------
    case("objective-unknown", "score -o nope -i rows.jsonl", "unknown objective 'nope'; available:",
         {"rows.jsonl": ROWS}),
    case("objective-python-no-module", "score -o python:no_such_module:f -i rows.jsonl",
         "cannot import 'no_such_module'", {"rows.jsonl": ROWS}),
    case("objective-python-raises", "score -o python:plugin:boom -i rows.jsonl",
         "objective 'boom' (spec python:plugin:boom, function plugin:boom) raised RuntimeError: kaput",
         {"rows.jsonl": ROWS, "plugin.py": PLUGIN}),
    case("objective-python-wrong-signature", "score -o python:plugin:no_arguments -i rows.jsonl",
         "cannot be called with (prompts, responses[, references])", {"rows.jsonl": ROWS, "plugin.py": PLUGIN}),
    case("objective-python-policy-factory-raises", "generate --policy p.yaml -w 1 hi", "factory kaput",
         {"p.yaml": "kind: python\nfactory: plugin:policy_factory\n", "plugin.py": PLUGIN}),
    case("objective-hf-path-missing", "score -o hf:./no-reward-model -i rows.jsonl", "model path not found",
         {"rows.jsonl": ROWS}),
    case("objective-length-parsecs", "score -o length:unit=parsecs -i rows.jsonl", "unit='parsecs' is invalid",
         {"rows.jsonl": ROWS}),
    # --- models and adapters --------------------------------------------------------------------------------
    case("model-dot-path-missing", "generate -m ./nope --persona a=x -w 1 hi", "model path not found: ./nope"),
    case("model-relative-path-missing", "generate -m models/nope --persona a=x -w 1 hi",
         "model path not found: models/nope", {"models": DIR}),
    case("adapter-without-weights", "generate -m @MODEL@ --adapter a=@NOWEIGHTS@ -w 1 hi",
         "adapter_model.safetensors (or adapter_model.bin) is missing"),
    case("adapter-wrong-shapes", "generate -m @MODEL@ --adapter a=@BADSHAPES@ -w 1 hi", "size mismatch"),
    case("model-judge-missing", "evaluate -c c.yaml", "model path not found: ./no-judge",
         {"c.yaml": two_methods(judge={"model": "./no-judge"})}),
    # --- prompts longer than the context (the tiny models have 256 positions) -------------------------------
    case("prompt-longer-than-context", f"{GEN} -w 1,1 --prompt-file p.txt", "the model has 256",
         {"p.txt": MAX_PROMPT}),
    case("prompt-argument-not-utf8", [*GEN.split(), "-w", "1,1", b"caf\xe9"],
         "prompt 0 is not UTF-8 text (byte 0xe9 at character 3"),
    case("prompt-stdin-not-utf8", f"{GEN} -w 1,1", "prompt 0 is not UTF-8 text", stdin=b"caf\xe9 au lait\n"),
    case("prompt-lone-surrogate-in-jsonl", f"{GEN} -w 1,1 --prompt-file p.jsonl", "lone surrogate U+D800",
         {"p.jsonl": '{"prompt": "a\\ud800b"}\n'}),
    case("prompt-system-not-utf8", ["generate", "-m", "@MODEL@", "--persona", b"a=caf\xe9", "-w", "1", "hi"], "UTF-8"),
    case("prompt-longer-than-context-in-evaluate", "evaluate -c c.yaml", "the model has 256",
         {"c.yaml": evaluation(prompts=[MAX_PROMPT])}),
    # --- evaluation configs ---------------------------------------------------------------------------------
    case("evaluate-reference-point-length", "evaluate -c c.yaml", "reference_point has 3 values",
         {"c.yaml": evaluation(reference_point=[0, 0, 0])}),
    # --- the baselines (issue 8) ----------------------------------------------------------------------------
    case("evaluate-unknown-method-kind", "evaluate -c c.yaml", "unknown policy kind 'soups'; known kinds:",
         {"c.yaml": evaluation(methods=[{"name": "s", "kind": "soups", "experts": ["x"]}])}),
    case("evaluate-soup-over-a-missing-expert", "evaluate -c c.yaml", "checkpoint 'no-such-run' does not exist",
         {"c.yaml": evaluation(methods=[{"name": "s", "kind": "soup", "experts": ["no-such-run"]}])}),
    case("evaluate-morlhf-without-checkpoints", "evaluate -c c.yaml", "checkpoints: List should have at least 1",
         {"c.yaml": evaluation(methods=[{"name": "m", "kind": "morlhf", "checkpoints": []}])}),
    case("train-experts-odd-steps", "train -c t.yaml", "make steps (3) a multiple of 2",
         {"t.yaml": yaml.safe_dump({"output": "run", "objectives": ["concise", "sentiment"], "steps": 3,
                                    "policy": {"kind": "experts"}, "sampler": {"alpha": 0.1}})}),
    case("compare-unequal-budgets", "compare -c c.yaml", "the runs generate different numbers of sequences",
         {"c.yaml": yaml.safe_dump({"output": "out", "train_defaults": {"objectives": ["concise"]},
                                    "train": {"a": {"steps": 2}, "b": {"steps": 4}},
                                    "evaluation": EVALUATION})}),
]

GOOD = {
    "help-without-arguments": (),
    "stream-json-prints-token-events": f"{GEN} -w 0.5,0.5 --stream --json hi".split(),
}
"""Controls that exit 0: no arguments prints the help; ``--stream --json`` is the table's base command printing
one JSON object per token event (it once printed plain text)."""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a directory, or a file's (bytes, mtime)."""
    state: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        state[rel] = "dir" if path.is_dir() else (path.read_bytes(), path.stat().st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_models, tiny_adapters) -> dict[str, Path]:
    """The tiny model the cases name, two broken LoRA adapters for it and an empty model cache."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("bad-inputs-shared")
    no_weights = root / "adapter-without-weights"
    no_weights.mkdir()
    shutil.copy(tiny_adapters[0] / "adapter_config.json", no_weights)
    bad_shapes = root / "adapter-bad-shapes"
    shutil.copytree(tiny_adapters[0], bad_shapes)
    tensors = load_file(tiny_adapters[0] / "adapter_model.safetensors")
    save_file({k: v[:, : v.shape[1] // 2].contiguous() if "lora_A" in k else v for k, v in tensors.items()},
              bad_shapes / "adapter_model.safetensors")  # an adapter trained on a model half as wide
    cache = root / "cache"
    cache.mkdir()
    return {"@MODEL@": tiny_models[0], "@NOWEIGHTS@": no_weights, "@BADSHAPES@": bad_shapes, "cache": cache}


def substitute(text: str, tokens: Mapping[str, Path]) -> str:
    for token, path in tokens.items():
        if token.startswith("@"):
            text = text.replace(token, str(path))
    return text


def make_files(root: Path, files: Mapping, tokens: Mapping[str, Path]) -> None:
    for name, content in files.items():
        path = root / name
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(substitute(content, tokens), encoding="utf-8")


def run_case(root: Path, args: tuple[str | bytes, ...], files: Mapping, env: Mapping, stdin: bytes | None,
             shared: Mapping[str, Path]) -> Outcome:
    root.mkdir(parents=True)
    tokens = {**shared, "@CASE@": root}
    make_files(root, files, tokens)
    environ = {k: v for k, v in os.environ.items() if k not in ("POLYALIGN_DEBUG", "PYTHONPATH", "PYTHONWARNINGS")}
    environ.update(POLYALIGN_CACHE=str(shared["cache"]), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1",
                   OMP_NUM_THREADS="1")  # two cases run at once on two cores: no thread oversubscription
    environ.update({k: substitute(v, tokens) for k, v in env.items()})
    before = snapshot(root)
    argv = [EXE, *(substitute(a, tokens) if isinstance(a, str) else a for a in args)]
    done = subprocess.run(argv, cwd=root, env=environ, input=stdin if stdin is not None else b"",
                          capture_output=True, timeout=300)
    return Outcome(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"),
                   before, snapshot(root))


def _slow_first(job: tuple) -> int:
    """Cases that may load a model or the evaluation package go first, so that two workers finish together."""
    args = job[1]
    return 0 if "evaluate" in args or any(isinstance(a, str) and "@" in a for a in args) else 1


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, shared) -> dict[str, Outcome]:
    """Every case and control, run two at a time."""
    base = tmp_path_factory.mktemp("bad-inputs")
    jobs = [(c.id, c.args, c.files, c.env, c.stdin) for c in (p.values[0] for p in CASES)]
    jobs += [(name, tuple(args), {}, {}, None) for name, args in GOOD.items()]
    jobs.sort(key=_slow_first)
    shared_before = snapshot(shared["@MODEL@"].parent)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_case, base / name, args, files, env, stdin, shared)
                   for name, args, files, env, stdin in jobs}
        results = {name: future.result() for name, future in futures.items()}
    results["shared-untouched"] = Outcome(0, "", "", shared_before, snapshot(shared["@MODEL@"].parent))
    return results


def test_the_table_covers_every_class_and_is_large_enough():
    ids = [p.values[0].id for p in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 45
    classes = {i.split("-")[0] for i in ids}
    assert {"usage", "weights", "divergence", "config", "stream", "file", "output", "objective", "model",
            "adapter", "prompt", "evaluate"} <= classes


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_error_line_exit_2_and_touches_nothing(outcomes, bad: Case):
    outcome = outcomes[bad.id]
    lines = outcome.stderr.splitlines()
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: "), outcome.stderr
    assert bad.message in lines[0], lines[0]
    assert outcome.code == 2, outcome.stderr
    assert outcome.after == outcome.before, "files in the case's folder changed"


def test_no_arguments_prints_the_help_and_exits_0(outcomes):
    outcome = outcomes["help-without-arguments"]
    assert outcome.code == 0 and not outcome.stderr
    assert "Usage: polyalign" in outcome.stdout and "generate" in outcome.stdout


def test_stream_json_prints_one_json_object_per_token_event(outcomes):
    outcome = outcomes["stream-json-prints-token-events"]
    assert outcome.code == 0, outcome.stderr
    events = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert 1 <= len(events) <= 2 and all(set(e) == {"index", "token_id", "text", "finish_reason"} for e in events)
    assert events[-1]["finish_reason"] in ("eos", "length")


def test_the_shared_models_are_untouched(outcomes):
    assert outcomes["shared-untouched"].after == outcomes["shared-untouched"].before

