"""A full evaluation on tiny random models: MOD, a plain model as a single point, the real LM judge."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from polyalign.cli import main
from polyalign.evaluation import evaluate, load_results, parse_config
from polyalign.evaluation.judge import LMJudge, load_judge


class TextStats:
    """Two cheap objectives that any text has: words (higher is better) and characters (lower is better)."""

    names = ["words", "chars"]
    higher_is_better = [True, False]

    def score(self, prompts, responses, references=None, batch_size=32, progress=False):
        return torch.tensor([[len(r.split()), len(r)] for r in responses], dtype=torch.float32)


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    ref, a, b = (str(p) for p in tiny_models)
    out = tmp_path_factory.mktemp("eval") / "run"
    config = parse_config({
        "objectives": ["words", "chars"],
        "methods": [
            {"name": "mod", "kind": "mod", "experts": [a, {"model": b, "name": "b"}], "reference": ref},
            {"name": "plain-a", "kind": "model", "model": a, "reference": ref},
        ],
        "prompts": ["hello world", "tell me a story about a happy cat", "what is the capital of france?"],
        "weights": {"simplex": 3, "explicit": [[2.0, -1.0]], "held_out": [[0.25, 0.75]]},
        "generation": {"max_new_tokens": 6, "strategy": "greedy", "seed": 0},
        "judge": {"model": ref, "criteria": ["quality", "conciseness"], "batch_size": 4},
        "n_bootstrap": 50,
        "output_dir": str(out),
    })
    result, paths = evaluate(config, objectives=TextStats(), progress=False)
    return config, result, paths


def test_full_evaluation_on_tiny_models_writes_every_file(run):
    config, result, paths = run
    for kind in ("json", "csv", "pareto", "kl_reward", "relative_value", "html"):
        assert paths[kind].is_file() and paths[kind].stat().st_size > 0, kind
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 3 and html.count("<table>") >= 5
    for heading in ("Front indicators", "Per weighting", "Relative value", "Judge", "Example responses"):
        assert heading in html
    assert "w=(2,-1)" in html and "(held-out)" in html
    assert load_results(paths["json"].parent).config_hash == config.fingerprint()


def test_mod_points_carry_kl_and_match_the_plain_model(run):
    _, result, _ = run
    mod, plain = result.sweeps
    assert [p.label for p in mod.points] == ["w=(0,1)", "w=(0.5,0.5)", "w=(1,0)", "w=(2,-1)", "w=(0.25,0.75)"]
    assert all(p.kl is not None and p.value[0] is not None for p in mod.points)
    assert plain.single_point and len(plain.points) == 1
    # MOD at w = (1, 0) decodes expert a alone, which is exactly the plain model a: same text, same KL to ref
    at_a = mod.points[2]
    assert [r.text for r in at_a.responses] == [r.text for r in plain.points[0].responses]
    assert at_a.kl == pytest.approx(plain.points[0].kl, abs=1e-4)
    assert plain.points[0].kl > 0  # a differs from the reference


def test_real_judge_counts(run):
    _, result, _ = run
    assert result.judge and {j.criterion for j in result.judge} == {"quality", "conciseness"}
    assert all((j.method_a, j.method_b) == ("plain-a", "mod") for j in result.judge)
    assert all(j.consistent + j.inconsistent == 3 for j in result.judge)
    same = [j for j in result.judge if j.label == "w=(1,0)"]
    # identical responses: a consistent verdict there can only be a tie
    assert all(j.wins == 0 and j.losses == 0 for j in same)


def test_load_judge_from_a_model_spec(tiny_models):
    judge = load_judge(str(tiny_models[0]), batch_size=2)
    assert isinstance(judge, LMJudge)
    assert judge.option_logprobs("judge", ["q1", "a longer q2"], ["A", "B"]).shape == (2, 2)


def test_cli_evaluate_with_real_objectives_on_tiny_models(tiny_models, tmp_path, capsys):
    ref, a, b = (str(p) for p in tiny_models)
    config = {
        "objectives": ["sentiment", "length:unit=chars"],
        "methods": [{"name": "mod", "kind": "mod", "experts": [a, b], "reference": ref}],
        "prompts": ["hello world", "tell me a story"],
        "weights": {"simplex": 3},
        "generation": {"max_new_tokens": 4},
        "reference_point": [-1.0, 0.0],
        "n_bootstrap": 20,
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["evaluate", "--config", str(path), "--no-progress"])
    assert "hypervolume" in capsys.readouterr().out
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    assert stored["objectives"] == ["sentiment", "length"] and stored["reference_point_source"] == "configured"
    assert stored["config"]["objectives"] == config["objectives"]
    assert (tmp_path / "run" / "report.html").is_file()

    config["methods"][0]["kind"] = "clp-not-yet"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--config", str(path), "--no-progress", "--out", str(tmp_path / "other")])
    assert exit_info.value.code == 2
    assert "unknown policy kind 'clp-not-yet'" in capsys.readouterr().err
