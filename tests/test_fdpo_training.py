"""f-DPO expert training on tiny random models: tokenisation as MOD decodes, sequence log-probs against teacher
forcing, a run that learns and writes an expert MOD and ``polyalign.load`` read, bit-exact resume, generated pairs,
the divergence check in MOD, and bad inputs through the installed executable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polyalign.errors import ConfigError, DivergenceError
from polyalign.preferences import PreferencePair
from polyalign.training.fdpo_config import parse_expert_config
from polyalign.training.fdpo_recipe import sequence_logprobs, tokenize_pairs, train_expert
from polyalign.training.learner import make_batch

pytestmark = pytest.mark.usefixtures("one_thread")
EXE = shutil.which("polyalign", path=os.path.dirname(sys.executable)) or shutil.which("polyalign")

ROWS = [{"prompt": f"tell me a story about a cat {i}", "chosen": "great, yes! " * (1 + i % 3),
         "rejected": "awful no"} for i in range(12)]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _config(model: Path, pairs: Path, output: Path, **extra):
    data = {"output": str(output), "objective": "cheerful", "policy": {"model": str(model), "rank": 4},
            "preferences": str(pairs), "divergence": "jsd", "beta": 0.5, "steps": 6, "batch_size": 4,
            "checkpoint_every": 3, "optim": {"lr": 1e-2}} | extra
    return parse_expert_config(data)


def test_pairs_are_tokenised_as_mod_reads_them(tiny_models, tiny_tokenizer):
    from polyalign.experts import encode_prompt

    pair = PreferencePair("hello world", "yes great", "no")
    data = tokenize_pairs(tiny_tokenizer, [pair], max_length=256)
    assert data.prompts[0] == encode_prompt(tiny_tokenizer, "hello world", None, True)
    eos = tiny_tokenizer.eos_token_id
    assert data.chosen[0] == tiny_tokenizer("yes great", add_special_tokens=False)["input_ids"] + [eos]
    short = tokenize_pairs(tiny_tokenizer, [pair], max_length=len(data.prompts[0]) + 2)
    assert len(short.chosen[0]) == 2
    with pytest.raises(ConfigError, match="no room for a response"):
        tokenize_pairs(tiny_tokenizer, [pair], max_length=len(data.prompts[0]))
    chat = PreferencePair((((("content", "hello world"), ("role", "user")),)), "yes", "no")
    assert tokenize_pairs(tiny_tokenizer, [chat], 256).prompts[0] == data.prompts[0]


def test_sequence_log_probs_equal_unpadded_teacher_forcing(tiny_models, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[1]).eval()
    prompts, responses = [[5, 6, 7, 8], [9, 10]], [[11, 12], [13, 14, 15, 2]]
    got = sequence_logprobs(model, make_batch(prompts, responses, 0, torch.device("cpu")), len(tiny_tokenizer))
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        logits = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1, : len(tiny_tokenizer)]
        want = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r)[:, None]).sum()
        assert float(got[row].detach()) == pytest.approx(float(want.detach()), abs=1e-4)


def test_training_learns_and_writes_an_expert_mod_and_load_read(tiny_models, pairs_file, tmp_path):
    import polyalign
    from polyalign.experts import Expert
    from polyalign.policies.mod import MOD, trained_metadata

    expert_dir = train_expert(_config(tiny_models[0], pairs_file, tmp_path / "run"), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 7))
    assert lines[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # the adapter starts at the reference
    assert lines[-1]["loss"] < 0.5 and lines[-1]["accuracy"] == 1.0 and lines[-1]["margin"] > 0
    meta = json.loads((expert_dir / "policy.json").read_text())
    assert (meta["kind"], meta["divergence"], meta["beta"], meta["objective"]) == ("fdpo_expert", "jsd", 0.5,
                                                                                   "cheerful")
    assert meta["base_model"] == str(tiny_models[0]) and meta["preferences"]["pairs"] == len(ROWS)
    assert (expert_dir / "adapter_model.safetensors").is_file() and not (expert_dir / "trainer").exists()
    expert = Expert(str(tiny_models[0]), adapter=str(expert_dir), name="cheerful")
    assert trained_metadata(expert)["divergence"] == "jsd"
    reference = Expert(str(tiny_models[0]))
    with pytest.raises(DivergenceError, match="trained by f-DPO under jsd .* MOD decodes under reverse_kl"):
        MOD([expert], reference)
    mod = MOD([expert], reference, divergence="js")
    allowed = MOD([expert], reference, divergence="forward_kl", allow_divergence_mismatch=True)
    assert mod.divergence.name == "jsd" and allowed.divergence.name == "forward_kl"
    # the chosen-style response is now likelier under the expert than under the reference
    policy = polyalign.load(tmp_path / "run")
    assert policy.objectives == ["cheerful"]
    from polyalign.policies import sequence_logprobs as policy_logprobs

    tok = policy.bank.tokenizer
    texts = [ROWS[1]["chosen"], ROWS[1]["rejected"]]
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    scored = policy_logprobs(policy, [ROWS[1]["prompt"]] * 2, ids, [1.0])
    ratios = [sum(s.logprobs) - sum(s.ref_logprobs) for s in scored]
    assert ratios[0] > ratios[1]  # the implicit reward prefers the chosen response
    from polyalign.policies.config import parse_policy

    described = parse_policy({"kind": "mod", "experts": [{"model": str(tiny_models[0]), "adapter": str(expert_dir),
                                                          "name": "cheerful"}], "reference": str(tiny_models[0])})
    with pytest.raises(DivergenceError):
        described.build()
    assert described.model_copy(update={"allow_divergence_mismatch": True}).build().objectives == ["cheerful"]


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_a_stopped_run_resumes_to_bit_identical_weights(tiny_models, pairs_file, tmp_path):
    straight = train_expert(_config(tiny_models[0], pairs_file, tmp_path / "a", steps=6), progress=False)
    train_expert(_config(tiny_models[0], pairs_file, tmp_path / "b", steps=3), progress=False)
    resumed = train_expert(_config(tiny_models[0], pairs_file, tmp_path / "b", steps=6), resume=True,
                           progress=False)
    a, b = _adapter(straight), _adapter(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 7))
    with pytest.raises(ConfigError, match="already holds a run"):
        train_expert(_config(tiny_models[0], pairs_file, tmp_path / "b"), progress=False)
    with pytest.raises(ConfigError, match="another 'beta'"):
        train_expert(_config(tiny_models[0], pairs_file, tmp_path / "b", beta=0.2), resume=True, progress=False)


def test_full_model_expert_from_generated_pairs(tiny_models, tmp_path):
    import polyalign

    config = parse_expert_config({
        "output": str(tmp_path / "full"), "policy": {"kind": "full", "model": str(tiny_models[0])},
        "generate": {"objectives": ["length:unit=chars"], "prompts": ["tell me a story", "hello world", "hi cat"],
                     "k": 3, "generation": {"max_new_tokens": 8}},
        "divergence": "reverse_kl", "steps": 2, "batch_size": 2, "optim": {"lr": 1e-4}})
    expert_dir = train_expert(config, progress=False)
    meta = json.loads((expert_dir / "policy.json").read_text())
    assert meta["format"] == "full" and meta["objective"] == "length" and meta["preferences"]["source"] == "generated"
    stats = json.loads((tmp_path / "full" / "preferences.json").read_text())
    assert stats["pairs"] + stats["ties"] + stats["identical"] == 3
    assert (expert_dir / "model.safetensors").is_file()
    assert polyalign.load(expert_dir).objectives == ["length"]


@pytest.mark.parametrize("data, message", [
    ({"divergence": "tv"}, "not a barrier function"),
    ({"divergence": "chi2"}, "Theorem 3"),
    ({"preferences": None}, "give preferences .* or generate"),
    ({"beta": 0}, "beta"),
    ({"lr": 1}, "unknown setting 'lr'"),
])
def test_bad_configs_name_what_is_wrong(tmp_path, data, message):
    base = {"output": str(tmp_path / "x"), "preferences": "p.jsonl"}
    with pytest.raises(ConfigError, match=message):
        parse_expert_config(base | data)


# -- through the installed executable ---------------------------------------------------------------------------


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "POLYALIGN_DEBUG": ""}
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(EXE is None, reason="the polyalign executable is not on PATH: pip install -e . installs it")
def test_bad_inputs_through_the_executable(tiny_models, tiny_adapters, tmp_path):
    files = {"missing.jsonl": '{"prompt": "p", "chosen": "a"}\n',
             "same.jsonl": '{"prompt": "p", "chosen": "a", "rejected": "a"}\n',
             "empty.jsonl": '{"prompt": "", "chosen": "a", "rejected": "b"}\n',
             "good.jsonl": '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    jsd_expert = tmp_path / "jsd-expert"
    shutil.copytree(tiny_adapters[0], jsd_expert)
    (jsd_expert / "policy.json").write_text(json.dumps({"kind": "fdpo_expert", "divergence": "jsd", "beta": 0.1}))
    model = str(tiny_models[0])
    train = ["train-expert", "-m", model, "-o", "out", "--steps", "1", "--no-progress"]
    cases = [
        (train + ["-p", "missing.jsonl"], "missing column(s) 'rejected'"),
        (train + ["-p", "same.jsonl"], "chosen and rejected are the same response"),
        (train + ["-p", "empty.jsonl"], "the prompt is empty"),
        (train + ["-p", "good.jsonl", "--divergence", "tv"], "not a barrier function"),
        (train + ["-p", "good.jsonl", "-O", "concise"], "--preferences or --objective, not both"),
        (train + ["--k", "3"], "need --objective"),
        (["generate", "hi", "-m", model, "--adapter", f"a={jsd_expert}", "-w", "1", "--max-new-tokens", "2"],
         "trained by f-DPO under jsd"),
    ]
    for args, message in cases:
        result = _run(args, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "out").exists()
    ok = _run(["generate", "hi", "-m", model, "--adapter", f"a={jsd_expert}", "-w", "1", "--max-new-tokens", "2",
               "--allow-divergence-mismatch"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    same = _run(["generate", "hi", "-m", model, "--adapter", f"a={jsd_expert}", "-w", "1", "--max-new-tokens", "2",
                 "--divergence", "jsd"], tmp_path)
    assert same.returncode == 0, same.stderr
