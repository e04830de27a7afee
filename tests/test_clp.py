"""The CLP policy on the engine: per-row weightings, the reference at f_mix = 1, exports that MOD decodes,
checkpoints (round trip, corrupt, incomplete, another base model) and its policy config."""

from __future__ import annotations

import json

import pytest
import torch

from polyalign import CLP, GenerationConfig, load
from polyalign.errors import ModelLoadError, PolyalignError, WeightsError
from polyalign.experts import Expert
from polyalign.policies import MOD, Plain
from polyalign.policies.config import parse_policy

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hello world", "tell me a story about a happy cat", "what is the capital of france?"]
GREEDY = GenerationConfig(max_new_tokens=8)
SELECTORS = ["lora", "lora:full", "logit", "full", "attn:0-0"]
ALPHA_MIN = 0.1


def _trained(model_dir, selector: str, seed: int = 1) -> CLP:
    """A CLP whose copies differ from each other and from the reference, as after training."""
    policy = CLP.create(["terse", "warm"], str(model_dir), selector, alpha_min=ALPHA_MIN)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in policy.trainable_state().values():
            t.add_(0.5 * torch.randn(t.shape, generator=g, dtype=t.dtype))
    return policy


@pytest.fixture(scope="module", params=SELECTORS)
def policy(request, tiny_models):
    return _trained(tiny_models[0], request.param)


def ids(gens):
    return [g.token_ids for g in gens]


def test_rows_with_different_weightings_decode_as_they_would_alone(policy):
    weights = [[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]]
    together = policy.generate(PROMPTS, weights, 0.4, config=GREEDY)
    alone = [policy.generate([p], w, 0.4, config=GREEDY)[0] for p, w in zip(PROMPTS, weights, strict=True)]
    assert ids(together) == ids(alone)
    for a, b in zip(together, alone, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    assert len({tuple(t) for t in ids(policy.generate([PROMPTS[0]] * 3, weights, 0.4, config=GREEDY))}) > 1


def test_f_mix_one_is_exactly_the_reference(policy, tiny_models):
    ref = Plain(Expert(str(tiny_models[0]))).generate(PROMPTS, [1.0], config=GREEDY)
    at_one = policy.generate(PROMPTS, [0.3, 0.7], alpha=1.0, config=GREEDY)
    assert ids(at_one) == ids(ref)
    assert all(abs(g.kl) < 1e-5 for g in at_one)
    steered = policy.generate(PROMPTS, [0.3, 0.7], config=GREEDY)
    assert ids(steered) != ids(ref)  # the copies do move the policy


def test_teacher_forcing_gives_the_generation_log_probs(policy):
    gens = policy.generate(PROMPTS, [0.6, 0.4], 0.2, config=GREEDY)
    scored = policy.sequence_logprobs(PROMPTS, [g.token_ids for g in gens], [0.6, 0.4], 0.2)
    for g, s in zip(gens, scored, strict=True):
        assert s.logprobs == pytest.approx(g.logprobs, abs=1e-5)
        assert s.ref_logprobs == pytest.approx(g.ref_logprobs, abs=1e-5)


def test_exported_copies_are_experts_that_mod_decodes(policy, tmp_path):
    experts = [policy.export_expert(i, tmp_path / f"copy{i}") for i in range(2)]
    mod = MOD(experts, reference=None)
    for i, w in enumerate(([1.0, 0.0], [0.0, 1.0])):
        clp = policy.generate(PROMPTS, w, config=GREEDY)  # alpha_min: beta = 0, the copy alone
        assert ids(mod.generate(PROMPTS, w, config=GREEDY)) == ids(clp), f"copy {i}"
    # MOD over the exported copies, reverse KL with w summing to 1: a real two-expert decode
    mixed = mod.generate(PROMPTS, [0.5, 0.5], config=GREEDY)
    assert all(len(g.token_ids) > 0 for g in mixed)


def test_checkpoint_round_trip_and_run_folder(policy, tmp_path):
    path = policy.save(tmp_path / "ckpt")
    meta = json.loads((path / "policy.json").read_text())
    assert meta["kind"] == "clp" and meta["objectives"] == ["terse", "warm"] and meta["alpha_min"] == ALPHA_MIN
    again = load(path)
    for a, b in ((policy, again),):
        assert ids(a.generate(PROMPTS, [0.2, 0.8], 0.3, config=GREEDY)) == \
            ids(b.generate(PROMPTS, [0.2, 0.8], 0.3, config=GREEDY))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    path.rename(run / "checkpoints" / "step-000007")
    assert load(run).objectives == ["terse", "warm"]


def test_bad_checkpoints_are_refused_by_name(tiny_models, tmp_path):
    policy = _trained(tiny_models[0], "lora")
    good = policy.save(tmp_path / "good")
    with pytest.raises(ModelLoadError, match="no policy.json"):
        load(tmp_path)
    with pytest.raises(PolyalignError, match="does not exist"):
        load(tmp_path / "missing")
    incomplete = policy.save(tmp_path / "incomplete")
    (incomplete / "COMPLETE").unlink()
    with pytest.raises(ModelLoadError, match="incomplete"):
        load(incomplete)
    truncated = policy.save(tmp_path / "truncated")
    data = (truncated / "policy.safetensors").read_bytes()
    (truncated / "policy.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load(truncated)
    garbage = policy.save(tmp_path / "garbage")
    (garbage / "policy.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load(garbage)
    with pytest.raises(ModelLoadError, match="other weights"):
        load(good, model=str(tiny_models[1]))  # same shapes, another base model
    meta = json.loads((good / "policy.json").read_text())
    other = policy.save(tmp_path / "other-selector")
    (other / "policy.json").write_text(json.dumps(meta | {"selector": "lora:full"}))
    with pytest.raises(ModelLoadError, match="does not match this policy's parameters"):
        load(other)


def test_bad_weights_and_alpha_are_refused(tiny_models):
    policy = CLP.create(["terse", "warm"], str(tiny_models[0]), "logit", alpha_min=ALPHA_MIN)
    with pytest.raises(WeightsError, match="simplex"):
        policy.generate(PROMPTS[0], [1.5, -0.5], config=GREEDY)
    with pytest.raises(WeightsError, match=r"alpha_min, 1\]"):
        policy.generate(PROMPTS[0], [0.5, 0.5], alpha=0.05, config=GREEDY)
    with pytest.raises(WeightsError):
        policy.generate(PROMPTS[0], [0.5, 0.3, 0.2], config=GREEDY)
    with pytest.raises(PolyalignError, match="matches no parameter"):
        CLP.create(["a", "b"], str(tiny_models[0]), r"regex:nothing_is_called_this")


def test_policy_config_builds_untrained_and_trained(tiny_models, tmp_path):
    untrained = parse_policy({"kind": "clp", "model": str(tiny_models[0]), "objectives": ["a", "b"]}).build()
    plain = Plain(Expert(str(tiny_models[0])))
    assert ids(untrained.generate(PROMPTS, [0.5, 0.5], config=GREEDY)) == ids(plain.generate(PROMPTS, [1.0],
                                                                                           config=GREEDY))
    saved = _trained(tiny_models[0], "logit").save(tmp_path / "c")
    config = parse_policy({"kind": "clp", "checkpoint": str(saved)})
    assert config.expert_names == ["terse", "warm"]
    assert config.build().objectives == ["terse", "warm"]
    with pytest.raises(PolyalignError, match="does not take"):
        parse_policy({"kind": "clp", "checkpiont": str(saved)})


def test_prompt_conditioning_writes_the_weighting_into_the_policy_prompt_only(tiny_models, tmp_path):
    policy = CLP.create(["terse", "warm"], str(tiny_models[0]), "logit", alpha_min=ALPHA_MIN,
                        prompt_conditioning=True)
    gens = policy.generate(PROMPTS, [[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]], 0.2, config=GREEDY)
    text = policy.bank.tokenizer.decode(gens[0].prompt_token_ids)
    assert "Objective weights: terse=0.30, warm=0.70. KL strength alpha=0.200." in text
    coefficients = policy.head_weights(torch.tensor([[0.3, 0.7]] * 3, dtype=torch.float64), 0.2)
    reference_rows, policy_rows = policy.bank.encode(PROMPTS, 0, coefficients)[0]
    assert policy_rows[0] == gens[0].prompt_token_ids
    assert "Objective weights" not in policy.bank.tokenizer.decode(reference_rows[0])
    plain = Plain(Expert(str(tiny_models[0]))).generate(PROMPTS, [1.0], config=GREEDY)
    # untrained copies are the reference: only the prompt moves the policy, and the KL sees it
    assert ids(gens) != ids(plain) and all(abs(g.kl) > 0 for g in gens)
    alone = [policy.generate([p], w, 0.2, config=GREEDY)[0] for p, w in
             zip(PROMPTS, [[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]], strict=True)]
    assert ids(alone) == ids(gens)
    assert load(policy.save(tmp_path / "c")).prompt_conditioning


def test_two_threads_and_interleaved_sessions_on_one_policy_give_what_they_give_alone(policy):
    import threading

    weights = ([1.0, 0.0], [0.0, 1.0])
    alone = [ids(policy.generate(PROMPTS, w, config=GREEDY)) for w in weights]
    def run(i: int, out: list) -> None:
        out[i] = ids(policy.generate(PROMPTS, weights[i], config=GREEDY))

    for _ in range(3):
        out: list = [None, None]
        threads = [threading.Thread(target=run, args=(i, out)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out == alone
    first, second = (policy.start(PROMPTS, w, config=GREEDY) for w in weights)
    while not (first.done and second.done):
        for session in (second, first):
            if not session.done:
                session.step()
    assert [[d.ids for d in s.drafts] for s in (first, second)] == alone
