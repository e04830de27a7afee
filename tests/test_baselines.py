"""The baselines as real methods on tiny random models: single-objective RL experts, Rewarded Soups, Prompting,
MORLHF, and MOD/DeRa over trained experts, each from training through ``polyalign evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from polyalign import load
from polyalign.errors import ConfigError, FileError, WeightsError
from polyalign.evaluation import evaluate, load_config
from polyalign.experts import Expert
from polyalign.interface import GenerationConfig
from polyalign.policies import MOD, Plain
from polyalign.policies.clp import parse_weighting_text, weighting_text
from polyalign.policies.config import parse_policy
from polyalign.policies.morlhf import MORLHF
from polyalign.policies.prompted import Prompted
from polyalign.policies.soup import Soup
from polyalign.training import parse_train_config, train
from tests.test_training import OBJECTIVES, PROMPTS, config_data

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["letter_e", "length"]
RESPONSES = ["the cat is happy", "paris", "no", "yes, a story about a fox"]
GREEDY = GenerationConfig(max_new_tokens=5)


def _train(root: Path, model: Path, name: str, **extra) -> Path:
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    data = config_data(model, prompts, root / name, **{"steps": 2, "batch_size": 2,
                                                      "generation.max_new_tokens": 4, **extra})
    train(parse_train_config(data), progress=False)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_models) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("baselines")
    model = tiny_models[0]
    return {
        "experts": _train(root, model, "experts", **{"policy.kind": "experts", "steps": 4, "sampler.alpha": 0.1}),
        "morlhf": _train(root, model, "morlhf", **{"policy.kind": "morlhf", "sampler.weights": [0.5, 0.5],
                                                    "sampler.alpha": 0.1}),
        "prompted": _train(root, model, "prompted", **{"policy.kind": "prompted"}),
        "clp": _train(root, model, "clp"),
        "other_base": _train(root, tiny_models[1], "other", **{"policy.kind": "experts", "steps": 2,
                                                                 "sampler.alpha": 0.1}),
    }


def _logprobs(policy, weights, alpha=None) -> torch.Tensor:
    rows = policy.sequence_logprobs(PROMPTS[:4], RESPONSES, weights, alpha)
    return torch.tensor([x for r in rows for x in r.logprobs])


def test_an_experts_run_trains_one_fixed_weighting_run_per_objective_on_half_the_steps(runs):
    experts = sorted(p.name for p in (runs["experts"] / "experts").iterdir())
    assert experts == sorted(NAMES)
    for i, name in enumerate(NAMES):
        lines = [json.loads(x) for x in (runs["experts"] / "experts" / name / "metrics.jsonl").read_text().splitlines()]
        assert [ln["step"] for ln in lines] == [1, 2]  # 4 steps split between 2 experts
        assert all(ln["weights"] == [1.0 if j == i else 0.0 for j in range(2)] and ln["alpha"] == 0.1 for ln in lines)
    expert = load(runs["experts"] / "experts" / "length")
    assert isinstance(expert, MORLHF) and expert.weightings == [[0.0, 1.0]]
    assert (expert.conditioned.lora_B[0][0] != 0).any()  # it trained


def test_a_soup_at_e_i_is_expert_i_and_mod_over_the_trained_experts_agrees(runs, tiny_models):
    soup = Soup.from_experts([runs["experts"]])
    for i, name in enumerate(NAMES):
        expert = load(runs["experts"] / "experts" / name)
        e = [1.0 if j == i else 0.0 for j in range(2)]
        torch.testing.assert_close(_logprobs(soup, e), _logprobs(expert, e), rtol=0, atol=1e-5)
        # the checkpoint is a peft adapter too: MOD with that one expert at weight 1 is the expert
        mod = MOD([Expert(str(tiny_models[0]), adapter=str(runs["experts"] / "experts" / name / "checkpoints" /
                                                            "step-000002"))], None)
        torch.testing.assert_close(_logprobs(mod, [1.0]), _logprobs(expert, e), rtol=0, atol=1e-4)


def test_a_lora_soup_equals_the_model_with_the_weighted_deltas_merged_by_peft(runs, tiny_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folders = [runs["experts"] / "experts" / n / "checkpoints" / "step-000002" for n in NAMES]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_models[0]))
    peft = PeftModel.from_pretrained(base, str(folders[0]), adapter_name="a")
    peft.load_adapter(str(folders[1]), adapter_name="b")
    peft.add_weighted_adapter(["a", "b"], [0.3, 0.7], "mix", combination_type="cat")  # exact: sum_i w_i B_i A_i
    peft.set_adapter("mix")
    merged = tmp_path / "merged"
    peft.merge_and_unload().save_pretrained(str(merged))
    AutoTokenizer.from_pretrained(str(tiny_models[0])).save_pretrained(str(merged))
    soup = Soup.from_experts([str(f) for f in folders])
    torch.testing.assert_close(_logprobs(soup, [0.3, 0.7]), _logprobs(Plain(Expert(str(merged))), [1.0]),
                               rtol=0, atol=1e-4)
    # alpha mixes further toward the reference: f_mix(1) = 1 is exactly the base model
    torch.testing.assert_close(_logprobs(soup, [0.3, 0.7], alpha=1.0),
                               _logprobs(Plain(Expert(str(tiny_models[0]))), [1.0]), rtol=0, atol=1e-5)


def test_the_prompting_template_round_trips_the_weights_and_only_the_policy_reads_it(runs):
    objectives = ["helpful", "harmless", "concise"]
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        w = torch.distributions.Dirichlet(torch.ones(3)).sample().tolist()
        alpha = float(torch.rand(1, generator=generator))
        back, a = parse_weighting_text(weighting_text(objectives, w, alpha), objectives)
        assert back == [round(x, 2) for x in w] and a == round(alpha, 3)
    policy = load(runs["prompted"])
    assert isinstance(policy, Prompted) and policy.objectives == NAMES
    encoded = policy.bank.encode(["hello world"], 4, policy.head_weights(torch.tensor([[0.25, 0.75]]), 0.2))
    reference, row = (policy.bank.tokenizer.decode(ids[0]) for ids in encoded[0])
    assert "Objective weights: letter_e=0.25, length=0.75. KL strength alpha=0.200." in row
    assert "Objective weights" not in reference
    # the weighting reaches the model through the prompt only: one copy, coefficients (1, 0) for every weighting
    assert len(policy.conditioned.objectives) == 1
    a, b = _logprobs(policy, [0.0, 1.0]), _logprobs(policy, [1.0, 0.0])
    assert not torch.allclose(a, b)


def test_morlhf_answers_its_trained_weightings_only(runs):
    policy = MORLHF.assemble([runs["morlhf"], runs["experts"] / "experts" / "letter_e"])
    assert policy.weightings == [[0.5, 0.5], [1.0, 0.0]]
    alone = load(runs["morlhf"])
    torch.testing.assert_close(_logprobs(policy, [0.5, 0.5]), _logprobs(alone, [0.5, 0.5]), rtol=0, atol=1e-5)
    gens = policy.generate(PROMPTS[:2], [[0.5, 0.5], [1.0, 0.0]], config=GREEDY)  # rows pick their own model
    assert [g.token_ids for g in gens[:1]] == [g.token_ids for g in alone.generate(PROMPTS[:1], [0.5, 0.5],
                                                                                   config=GREEDY)]
    with pytest.raises(WeightsError, match=r"models at weightings \[\[0.5, 0.5\], \[1.0, 0.0\]\] only"):
        policy.generate(PROMPTS[:1], [0.3, 0.7])
    with pytest.raises(WeightsError, match="trained at alpha=0.1"):
        policy.generate(PROMPTS[:1], [0.5, 0.5], alpha=0.5)
    with pytest.raises(ConfigError, match="both trained at"):
        MORLHF.assemble([runs["morlhf"], runs["morlhf"]])


def test_dera_over_a_trained_expert_takes_its_alpha_and_equals_mod_with_that_expert(runs, tiny_models):
    folder = runs["experts"] / "experts" / "length"
    dera = parse_policy({"kind": "dera", "aligned": {"checkpoint": str(folder)}}).build(["length"])
    assert dera.trained_alpha == 0.1 and dera.objectives == ["length"]
    adapter = str(folder / "checkpoints" / "step-000002")
    mod = MOD([Expert(str(tiny_models[0]), adapter=adapter)], Expert(str(tiny_models[0])))
    lam = (0.1 / 0.9) / (0.2 / 0.8)  # lambda = beta(trained alpha) / beta(alpha)
    torch.testing.assert_close(_logprobs(dera, [1.0], alpha=0.2), _logprobs(mod, [lam]), rtol=0, atol=1e-5)


def test_every_method_kind_runs_through_polyalign_evaluate(runs, tiny_models, tmp_path):
    base = str(tiny_models[0])
    experts = [{"checkpoint": str(runs["experts"] / "experts" / n)} for n in NAMES]
    config = {
        "objectives": OBJECTIVES,
        "methods": [
            {"name": "clp", "kind": "clp", "checkpoint": str(runs["clp"])},
            {"name": "prompted", "kind": "prompted", "checkpoint": str(runs["prompted"])},
            {"name": "soup", "kind": "soup", "experts": [str(runs["experts"])]},
            {"name": "morlhf", "kind": "morlhf", "checkpoints": [str(runs["morlhf"]), str(runs["experts"])]},
            {"name": "mod", "kind": "mod", "experts": experts, "reference": base},
            {"name": "dera", "kind": "dera", "aligned": experts[0], "alphas": [0.1, 0.3]},
            {"name": "untrained", "kind": "plain", "model": base},
        ],
        "prompts": PROMPTS[:3], "weights": {"simplex": 3}, "generation": {"max_new_tokens": 4},
        "n_bootstrap": 20, "output_dir": str(tmp_path / "eval"), "baseline": "untrained",
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    result, paths = evaluate(load_config(tmp_path / "eval.yaml"), progress=False)
    points = {s.method: [tuple(p.weights) for p in s.points] for s in result.sweeps}
    assert len(points["clp"]) == len(points["soup"]) == len(points["prompted"]) == len(points["mod"]) == 3
    assert sorted(points["morlhf"]) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]  # its own weightings, not the grid
    assert len(points["dera"]) == 2 and len(points["untrained"]) == 1
    assert paths["html"].is_file()


def test_bad_baselines_are_refused_with_the_reason(runs, tmp_path):
    with pytest.raises(ConfigError, match="different base weights"):
        Soup.from_experts([runs["experts"] / "experts" / "letter_e", runs["other_base"] / "experts" / "length"])
    with pytest.raises(ConfigError, match="both experts for 'letter_e'"):
        Soup.from_experts([runs["experts"] / "experts" / "letter_e"] * 2)
    with pytest.raises(ConfigError, match=r"no expert for \['length'\]"):
        Soup.from_experts([runs["experts"] / "experts" / "letter_e"])
    with pytest.raises(ConfigError, match="not at one objective's e_i"):
        Soup.from_experts([runs["morlhf"], runs["experts"] / "experts" / "length"])
    with pytest.raises(ConfigError, match="holds a 'clp' checkpoint, not a fixed-weighting one"):
        Soup.from_experts([runs["clp"]])
    with pytest.raises(ConfigError, match="holds a 'prompted' policy, not a 'clp' one: describe it as kind: prompted"):
        parse_policy({"kind": "clp", "checkpoint": str(runs["prompted"])}).build()
    with pytest.raises(ConfigError, match="holds a 'clp' policy; an expert is a fixed-weighting checkpoint"):
        parse_policy({"kind": "mod", "experts": [{"checkpoint": str(runs["clp"])}]}).build()
    with pytest.raises(ConfigError, match="unknown policy kind 'soups'; known kinds: .*soup"):
        parse_policy({"kind": "soups", "experts": ["x"]})
    with pytest.raises(ConfigError, match="DeRa needs the reference"):
        from polyalign.policies.dera import DeRa

        DeRa(Expert("x"), None)
    with pytest.raises(FileError, match="does not exist"):
        Soup.from_experts([tmp_path / "nothing-here"])


@pytest.mark.parametrize(("extra", "message"), [
    ({"policy.kind": "morlhf", "sampler.alpha": 0.1}, "set sampler.weights"),
    ({"policy.kind": "morlhf", "sampler.weights": [0.5, 0.5]}, "set sampler.alpha"),
    ({"policy.kind": "experts", "sampler.alpha": 0.1, "steps": 3}, "multiple of 2"),
    ({"policy.kind": "experts", "sampler.alpha": 0.1, "sampler.weights": [1, 0]}, "remove sampler.weights"),
    ({"policy.kind": "prompted", "policy.prompt_conditioning": False}, "always writes the weighting"),
])
def test_training_configs_of_the_baselines_are_checked(tmp_path, extra, message):
    data = config_data(Path("m"), Path("p"), tmp_path / "run", **extra)
    with pytest.raises(ConfigError, match=message):
        parse_train_config(data)


def _compare_config(tmp_path: Path, model: Path, **train) -> dict:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    defaults = config_data(model, prompts, tmp_path / "unused", **{"batch_size": 2, "generation.max_new_tokens": 4,
                                                                 "sampler.alpha": 0.1})
    defaults.pop("output")
    out = tmp_path / "compare"
    return {"output": str(out), "train_defaults": defaults, "train": train or {
        "experts": {"policy": {"kind": "experts"}, "steps": 2}, "clp": {"steps": 2}},
        "evaluation": {"objectives": OBJECTIVES, "prompts": PROMPTS[:2], "weights": {"simplex": 2},
                       "generation": {"max_new_tokens": 3}, "n_bootstrap": 10,
                       "methods": [{"name": "clp", "kind": "clp", "checkpoint": str(out / "clp")},
                                   {"name": "soup", "kind": "soup", "experts": [str(out / "experts")]}]}}


def test_compare_trains_every_run_on_equal_budgets_then_evaluates_and_a_rerun_trains_nothing(tmp_path, tiny_models):
    from polyalign.compare import CompareConfig, run_compare

    config = CompareConfig.model_validate(_compare_config(tmp_path, tiny_models[0]))
    done = run_compare(config, progress=False, echo=lambda *_: None)
    assert done["budget_sequences"] == {"experts": 4, "clp": 4}
    assert {f.method for f in done["result"].indicators} == {"clp", "soup"}
    saved = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert set(saved["train_seconds"]) == {"experts", "clp"} and Path(saved["paths"]["html"]).is_file()
    metrics = (tmp_path / "compare" / "clp" / "metrics.jsonl").read_text()
    run_compare(config, progress=False, echo=lambda *_: None)  # finished runs are not trained again
    assert (tmp_path / "compare" / "clp" / "metrics.jsonl").read_text() == metrics


def test_compare_refuses_unequal_budgets_before_training(tmp_path, tiny_models):
    from polyalign.compare import CompareConfig, train_configs

    config = CompareConfig.model_validate(_compare_config(
        tmp_path, tiny_models[0], experts={"policy": {"kind": "experts"}, "steps": 2}, clp={"steps": 4}))
    with pytest.raises(ConfigError, match=r"different numbers of sequences \(\{'experts': 4, 'clp': 8\}\)"):
        train_configs(config)


def test_evaluate_refuses_a_missing_checkpoint_of_a_later_method_before_the_first_method_runs(runs, tiny_models,
                                                                                               tmp_path):
    config = {"objectives": OBJECTIVES, "prompts": PROMPTS[:1], "output_dir": str(tmp_path / "eval"),
              "methods": [{"name": "untrained", "kind": "plain", "model": str(tiny_models[0])},
                          {"name": "dera", "kind": "dera", "aligned": {"checkpoint": str(tmp_path / "gone")}}]}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(FileError, match=r"method 'dera': checkpoint .*gone.* does not exist"):
        evaluate(load_config(tmp_path / "eval.yaml"), progress=False)
    assert not (tmp_path / "eval" / "results.json").exists()
