"""CLP training (Algorithm 1): the step maths against hand-computed values, the samplers' laws, the data order,
configs and their errors, the learner against teacher forcing, learning on a tiny model, checkpoints, SIGKILL
and bit-exact resume, and two CPU processes (gloo) that stay in sync."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats

from polyalign import load
from polyalign.cli import main
from polyalign.errors import ConfigError
from polyalign.training import estimators as E
from polyalign.training import parse_train_config, train
from polyalign.training.config import apply_overrides
from polyalign.training.learner import Learner, make_batch
from polyalign.training.recipe import draw_weighting, prompt_batch
from polyalign.training.run import weights_digest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["hello world", "tell me a story", "what is the capital of france?", "be terse and brief",
           "be warm, kind and enthusiastic!", "the quick brown fox", "yes or no?", "a happy cat"]
OBJECTIVES = ["python:tests.objective_plugins:letter_e", "length:unit=chars,range=0..40,clip=true"]


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def config_data(model: Path, prompts: Path, output: Path, **extra) -> dict:
    data = {"output": str(output), "policy": {"model": str(model), "selector": "lora:full", "rank": 4,
                                              "alpha_min": 0.05},
            "objectives": OBJECTIVES, "prompts": str(prompts), "steps": 4, "batch_size": 4,
            "generation": {"max_new_tokens": 6, "strategy": "sample"}, "checkpoint_every": 2,
            "optim": {"lr": 5e-2}}
    return apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in extra.items()])


# -- the maths -------------------------------------------------------------------------------------------------

def test_reward_kl_and_advantages_match_hand_computed_values():
    rewards = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    kl = torch.tensor([0.2, 1.0, 0.0], dtype=torch.float64)
    w = torch.tensor([0.25, 0.75])
    got = E.scalarised_reward(rewards, w, 0.1, kl)
    expected = [0.9 * 0.25 - 0.1 * 0.2, 0.9 * 0.5 - 0.1 * 1.0, 0.9 * 1.5 - 0.0]
    assert got.tolist() == pytest.approx(expected)
    lp, ref = torch.tensor([[-1.0, -2.0, -9.0]]), torch.tensor([[-1.5, -1.0, 0.0]])
    assert E.sequence_kl(lp, ref, torch.tensor([[1.0, 1.0, 0.0]])).tolist() == pytest.approx([0.5 - 1.0])
    r = torch.tensor([1.0, 2.0, 4.0, 0.0, 3.0, 3.0])
    assert E.rloo_advantages(r, 3).tolist() == pytest.approx([1 - 3, 2 - 2.5, 4 - 1.5, 0 - 3, 3 - 1.5, 3 - 1.5])
    norm = E.normalise(torch.tensor([1.0, 3.0]))
    assert norm.tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    values = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    assert E.combined_value(values, torch.tensor([0.5, 0.5])).tolist() == [2.0, 1.0]
    assert float(E.value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))) == pytest.approx(2.5)
    with pytest.raises(ConfigError, match="k >= 2"):
        E.rloo_advantages(r, 1)


def test_policy_gradient_loss_has_the_reinforce_gradient():
    logits = torch.randn(2, 3, 5, requires_grad=True, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[1, 2, 0], [4, 4, 3]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([0.5, -2.0])
    lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (grad,) = torch.autograd.grad(E.policy_gradient_loss(lp, mask, adv), logits)
    by_hand = torch.zeros_like(logits)
    for b in range(2):
        for t in range(3):
            onehot = torch.nn.functional.one_hot(tokens[b, t], 5).float()
            by_hand[b, t] = -adv[b] * mask[b, t] * (onehot - torch.softmax(logits[b, t], -1)) / 2
    assert torch.allclose(grad, by_hand, atol=1e-6)


def _config(tmp_path, **extra):
    data = {"output": str(tmp_path / "run"), "objectives": ["concise", "sentiment"], **extra}
    return parse_train_config(data)


def test_weightings_follow_dirichlet_and_the_inverse_cdf_law(tmp_path):
    config = _config(tmp_path, sampler={"concentration": [2.0, 1.0]}, policy={"alpha_min": 0.05})
    draws = [draw_weighting(config, step) for step in range(3000)]
    w = torch.stack([d[0] for d in draws])
    assert w.sum(-1).sub(1).abs().max() < 1e-12 and (w >= 0).all()
    assert w.mean(0).tolist() == pytest.approx([2 / 3, 1 / 3], abs=0.02)  # Dirichlet(c) mean c / sum c
    alpha = torch.tensor([d[1] for d in draws], dtype=torch.float64)
    beta = (alpha - 0.05) / (alpha * 0.95)  # softmdp: f_mix(alpha) must be uniform on [0, 1]
    assert stats.kstest(beta.numpy(), "uniform").pvalue > 0.01
    assert draw_weighting(config, 17)[0].tolist() == draw_weighting(config, 17)[0].tolist()
    fixed = _config(tmp_path, sampler={"weights": [0.3, 0.7], "alpha": 0.2})
    assert [draw_weighting(fixed, s)[0].tolist() for s in (0, 5)] == [[0.3, 0.7]] * 2
    assert draw_weighting(fixed, 3)[1] == 0.2


def test_prompt_batches_cover_each_epoch_and_ranks_never_overlap(tmp_path):
    config = _config(tmp_path, batch_size=2)
    prompts = [f"p{i}" for i in range(8)]
    epoch = [p for step in range(2) for rank in range(2) for p in prompt_batch(prompts, config, step, 0, rank, 2)]
    assert sorted(epoch) == sorted(prompts)
    assert prompt_batch(prompts, config, 1, 0, 0, 2) != prompt_batch(prompts, config, 1, 0, 1, 2)
    assert prompt_batch(prompts, config, 5, 0, 1, 2) == prompt_batch(prompts, config, 5, 0, 1, 2)


@pytest.mark.parametrize(("data", "message"), [
    ({"optim": {"lr": 1e-3, "lerning_rate": 2}}, "unknown setting 'optim.lerning_rate'"),
    ({"stepz": 3}, "unknown setting 'stepz'"),
    ({"sampler": {"weights": [1.0]}}, "1 values for 2 objectives"),
    ({"sampler": {"alpha": 0.001}}, "outside [alpha_min, 1]"),
    ({"generation": {"strategy": "greedy"}}, "must be 'sample'"),
    ({"policy": {"selector": "atn"}}, "unknown selector 'atn'"),
    ({"optim": {"lr": -1}}, "optim.lr"),
    ({"objectives": []}, "objectives"),
])
def test_bad_configs_name_what_is_wrong(tmp_path, data, message):
    with pytest.raises(ConfigError) as exc:
        _config(tmp_path, **data)
    assert message in str(exc.value)


def test_overrides_are_dotted_and_typed():
    out = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=1e-4", "steps=7", "policy.selector=logit"])
    assert out == {"optim": {"lr": 1e-4}, "steps": 7, "policy": {"selector": "logit"}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])


# -- the learner -------------------------------------------------------------------------------------------------

def test_learner_log_probs_equal_teacher_forcing(tiny_models):
    from polyalign import CLP, GenerationConfig

    policy = CLP.create(["a", "b"], str(tiny_models[0]), "lora:full", alpha_min=0.05, rank=4)
    with torch.no_grad():
        for t in policy.trainable_state().values():
            t.add_(0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2)))
    gens = policy.generate(PROMPTS[:3], [0.2, 0.8], 0.3, GenerationConfig(max_new_tokens=7, strategy="sample",
                                                                             seed=1))
    learner = Learner(policy.conditioned, policy.bank.vocab_size, 0)
    batch = make_batch([g.prompt_token_ids for g in gens], [g.token_ids for g in gens], 0, torch.device("cpu"))
    coefficients = policy.head_weights(torch.tensor([[0.2, 0.8]], dtype=torch.float64), 0.3)
    logprobs, values, entropy = learner(batch, coefficients)
    for j, g in enumerate(gens):
        assert logprobs[j, : len(g.token_ids)].tolist() == pytest.approx(g.logprobs, abs=1e-5)
    assert values.shape == (3, 2) and float(entropy) > 0
    logprobs.sum().backward()
    assert all(p.grad is not None for p in learner.policy_parameters())


@pytest.mark.parametrize("prompt_conditioning", [False, True])
def test_teacher_forced_reference_kl_equals_the_kl_decoded_with_the_reference(tiny_models, prompt_conditioning):
    from polyalign import CLP, GenerationConfig
    from polyalign.training.recipe import reference_kl

    policy = CLP.create(["a", "b"], str(tiny_models[0]), "lora:full", alpha_min=0.05, rank=4,
                        prompt_conditioning=prompt_conditioning)
    with torch.no_grad():
        for t in policy.trainable_state().values():
            t.add_(0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(4)))
    config = GenerationConfig(max_new_tokens=7, strategy="sample", seed=2)
    both = policy.generate(PROMPTS[:4], [0.7, 0.3], 0.2, config)
    alone = policy.without_reference().generate(PROMPTS[:4], [0.7, 0.3], 0.2, config)
    assert [g.token_ids for g in alone] == [g.token_ids for g in both] and alone[0].ref_logprobs is None
    learner = Learner(policy.conditioned, policy.bank.vocab_size, 0)
    kl = reference_kl(learner, policy, PROMPTS[:4], alone)
    assert kl.tolist() == pytest.approx([g.kl for g in both], abs=1e-4)
    assert float(kl.abs().sum()) > 0.1


# -- runs -------------------------------------------------------------------------------------------------------

def test_training_learns_and_writes_a_loadable_run(tiny_models, prompts_file, tmp_path):
    data = config_data(tiny_models[0], prompts_file, tmp_path / "run", steps=30, checkpoint_every=10,
                       batch_size=8, **{"sampler.weights": [1.0, 0.0], "sampler.alpha": 0.05})
    final = train(parse_train_config(data), progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(1, 31))
    for key in ("reward/letter_e", "reward/length", "kl", "loss", "value_error", "entropy", "tokens_per_s",
                "seconds/generate", "seconds/score", "seconds/update", "grad_norm", "lr"):
        assert key in lines[0], key
    first = sum(ln["reward/letter_e"] for ln in lines[:5]) / 5
    last = sum(ln["reward/letter_e"] for ln in lines[-5:]) / 5
    assert last > first + 0.05, (first, last)  # the rewarded letter became more frequent
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000020", "step-000030"]
    assert final.name == "step-000030"
    policy = load(tmp_path / "run")
    assert policy.objectives == ["letter_e", "length"]
    assert (final / "trainer" / "optimizer.pt").is_file()
    torch.load(final / "trainer" / "optimizer.pt", weights_only=True)
    sync = json.loads((tmp_path / "run" / "sync.json").read_text())
    assert sync["in_sync"] and sync["processes"] == 1


def test_rloo_draws_k_samples_per_prompt(tiny_models, prompts_file, tmp_path):
    data = config_data(tiny_models[0], prompts_file, tmp_path / "rloo", steps=2, estimator="rloo", rloo_k=3,
                       batch_size=2)
    train(parse_train_config(data), progress=False)
    lines = [json.loads(ln) for ln in (tmp_path / "rloo" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and "value_error" not in lines[0] and lines[0]["grad_norm"] > 0


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "polyalign.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _write(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    last = sorted((run / "checkpoints").glob("step-*"))[-1]
    return load_file(str(last / "policy.safetensors")) | {
        f"value.{k}": v for k, v in load_file(str(last / "value.safetensors")).items()}


def test_a_run_killed_mid_way_resumes_to_bit_identical_weights(tiny_models, prompts_file, tmp_path):
    steps = 40
    straight = _write(tmp_path, config_data(tiny_models[0], prompts_file, tmp_path / "straight", steps=steps,
                                            checkpoint_every=5), "straight.yaml")
    killed = _write(tmp_path, config_data(tiny_models[0], prompts_file, tmp_path / "killed", steps=steps,
                                          checkpoint_every=5), "killed.yaml")
    proc = _cli("train", "-c", str(killed), "--no-progress")
    deadline = time.time() + 120
    while not (tmp_path / "killed" / "checkpoints" / "step-000010" / "COMPLETE").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert done < steps  # it really was cut short
    first = _cli("train", "-c", str(straight), "--no-progress")
    resumed = _cli("train", "-c", str(killed), "--resume", "--no-progress")
    for p in (first, resumed):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, steps + 1))  # redone steps are not doubled


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_in_sync(tiny_models, prompts_file, tmp_path):
    config = _write(tmp_path, config_data(tiny_models[0], prompts_file, tmp_path / "ddp", steps=3,
                                          checkpoint_every=3))
    port = str(_free_port())
    procs = [_cli("train", "-c", str(config), "--no-progress",
                  env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2", "RANK": str(r),
                       "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "true"})
             for r in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    sync = json.loads((tmp_path / "ddp" / "sync.json").read_text())
    assert sync["processes"] == 2 and sync["in_sync"], sync
    from polyalign import CLP

    untrained = CLP.create(["letter_e", "length"], str(tiny_models[0]), "lora:full", alpha_min=0.05, rank=4)
    assert weights_digest(Learner(untrained.conditioned, 10, 0)) not in sync["digests"]  # and it did train


# -- the command line --------------------------------------------------------------------------------------------

def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    return exc.value.code, capsys.readouterr().err


def test_cli_refuses_bad_runs_in_one_line(tiny_models, prompts_file, tmp_path, capsys):
    good = config_data(tiny_models[0], prompts_file, tmp_path / "run", steps=2)
    cases = [
        (good | {"optimizer": {}}, [], "unknown setting 'optimizer'"),
        (good, ["--set", "optim.lr=-3"], "optim.lr"),
        (good, ["--resume"], "holds no run"),
        (good | {"prompts": str(tmp_path / "missing.txt")}, [], "does not exist"),
        (good | {"objectives": ["nonsense-objective"]}, [], "nonsense-objective"),
    ]
    for data, extra, message in cases:
        code, err = run_cli(["train", "-c", str(_write(tmp_path, data)), "--no-progress", *extra], capsys)
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and message in err, err
    code, _ = run_cli(["train", "-c", str(_write(tmp_path, good)), "--no-progress"], capsys)
    assert code == 0
    code, err = run_cli(["train", "-c", str(_write(tmp_path, good)), "--no-progress"], capsys)
    assert code == 2 and "--resume" in err
    changed = apply_overrides(good, ["optim.lr=0.5"])
    code, err = run_cli(["train", "-c", str(_write(tmp_path, changed)), "--resume", "--no-progress"], capsys)
    assert code == 2 and "another 'optim'" in err
    # the run folder is checked before any model loads: a missing model is not what these report
    missing_model = apply_overrides(good, ["policy.model=./no-such-model"])
    code, err = run_cli(["train", "-c", str(_write(tmp_path, missing_model)), "--no-progress"], capsys)
    assert code == 2 and "already holds a run" in err, err
    (tmp_path / "a-file").write_text("x")
    under_file = apply_overrides(missing_model, [f"output={tmp_path / 'a-file' / 'run'}"])
    code, err = run_cli(["train", "-c", str(_write(tmp_path, under_file)), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "run folder" in err, err


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start_without_doubled_lines(
        tiny_models, prompts_file, tmp_path):
    import shutil

    config = parse_train_config(config_data(tiny_models[0], prompts_file, tmp_path / "run", steps=2,
                                            checkpoint_every=2))
    train(config, progress=False)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # as if killed after writing lines, before any checkpoint
    train(config, resume=True, progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2]
