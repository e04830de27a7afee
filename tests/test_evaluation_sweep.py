"""Sweeps, summaries, files and the config-driven run, on a deterministic test-only policy."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from polyalign.cli import main
from polyalign.errors import ConfigError, WeightsError
from polyalign.evaluation import (
    build_method,
    evaluate,
    load_results,
    parse_config,
    run_sweep,
    simplex_grid,
    summarize,
    write_outputs,
)
from polyalign.interface import GenerationConfig
from tests import eval_helpers
from tests.eval_helpers import ShorterJudge, ToyObjectives, ToyPolicy

PROMPTS = ["say something", "tell me <b>more</b> & <script>x</script>", "third"]


def test_run_sweep_records_means_cis_kl_and_values():
    policy = ToyPolicy()
    config = GenerationConfig(max_new_tokens=8, seed=3)
    sweep = run_sweep(policy, PROMPTS, simplex_grid(2, 11), ToyObjectives(), config=config, progress=False,
                      name="toy", value_alpha=0.2)
    assert len(sweep.points) == 11 and sweep.method == "toy"
    assert policy.calls == 11 and all(c is config for c in policy.configs)  # same prompts, same seed
    for p in sweep.points:
        w0 = p.weights[0]
        assert p.mean[0] == pytest.approx(round(10 * w0) / 10)
        assert all(lo <= m + 1e-12 and m <= hi + 1e-12 for lo, m, hi in zip(p.ci_low, p.mean, p.ci_high, strict=True))
        n_tokens = round(10 * w0) + round(10 * (1 - w0)) + 1
        kls = [n_tokens * (abs(w0 - 0.5) + 0.01 * i) for i in range(3)]
        assert p.kl == pytest.approx(np.mean(kls))
        assert p.value[0] == pytest.approx(0.8 * p.mean[0] - 0.2 * p.kl)
        weighted = [w0 * r.scores[0] + (1 - w0) * r.scores[1] for r in p.responses]
        assert p.weighted_value == pytest.approx(0.8 * np.mean(weighted) - 0.2 * p.kl)
        assert len(p.responses) == 3 and p.responses[1].prompt == PROMPTS[1]
    assert set(sweep.timings) == {"generation", "scoring", "summary"}


def test_weightings_outside_a_policys_domain_are_skipped_and_reported(tmp_path):
    from polyalign.evaluation.grid import line_grid
    from polyalign.weights import SIMPLEX

    policy = ToyPolicy()
    policy.weight_domain = SIMPLEX
    grid = simplex_grid(2, 3) + line_grid((-1, 2), (2, -1), 4)  # the line leaves the simplex at both ends
    sweep = run_sweep(policy, PROMPTS, grid, ToyObjectives(), progress=False, name="simplex-only")
    assert {p.label for p in sweep.points} == {"w=(0,1)", "w=(0.5,0.5)", "w=(1,0)"}
    assert set(sweep.skipped) == {"w=(-1,2)", "w=(2,-1)"} and "simplex" in sweep.skipped["w=(-1,2)"]
    html = write_outputs(summarize([sweep], None, "simplex-only"), tmp_path)["html"].read_text()
    assert "outside this method's weight domain" in html and "w=(-1,2)" in html
    with pytest.raises(WeightsError, match="no weighting of the grid lies in the policy's domain"):
        run_sweep(policy, PROMPTS, [[2.0, -1.0]], ToyObjectives(), progress=False)


def test_weights_are_matched_to_objectives_by_name():
    policy = ToyPolicy(objectives=("long", "pos"))  # the scored objectives are (pos, long)
    sweep = run_sweep(policy, PROMPTS, [[1.0, 0.0]], ToyObjectives(), progress=False)
    assert sweep.points[0].mean == pytest.approx([1.0, 0.0])  # all weight on "pos" reached the policy's "pos"
    with pytest.raises(WeightsError, match="matched by name"):
        run_sweep(ToyPolicy(objectives=("pos", "other")), PROMPTS, [[1.0, 0.0]], ToyObjectives(), progress=False)


def test_run_sweep_without_kl_and_alpha_sweep():
    sweep = run_sweep(ToyPolicy(kl=False), PROMPTS, [[0.5, 0.5]], ToyObjectives(), progress=False, value_alpha=0.0)
    assert sweep.points[0].kl is None and sweep.points[0].value == pytest.approx(sweep.points[0].mean)
    sweep = run_sweep(ToyPolicy(kl=False), PROMPTS, [[0.5, 0.5]], ToyObjectives(), alpha=0.3, progress=False)
    assert sweep.points[0].alpha == 0.3 and sweep.points[0].value == [None, None]


def test_run_sweep_bad_input():
    with pytest.raises(WeightsError, match="expected 2 weights, one per objective"):
        run_sweep(ToyPolicy(), PROMPTS, [[0.2, 0.3, 0.5]], ToyObjectives(), progress=False)
    with pytest.raises(ConfigError, match="empty"):
        run_sweep(ToyPolicy(), PROMPTS, [], ToyObjectives(), progress=False)
    with pytest.raises(WeightsError, match="steers objectives"):
        run_sweep(ToyPolicy(objectives=("a", "b", "c")), PROMPTS, [[0.5, 0.5]], ToyObjectives(), progress=False)
    with pytest.raises(ConfigError, match="no prompts"):
        run_sweep(ToyPolicy(), [], [[0.5, 0.5]], ToyObjectives(), progress=False)


def test_summary_indicators_on_the_toy_front():
    weightings = [*simplex_grid(2, 6), (0.5, 0.5)]
    grid = run_sweep(ToyPolicy(), PROMPTS, weightings, ToyObjectives(), progress=False, name="grid")
    half = run_sweep(ToyPolicy(), PROMPTS, [[0.5, 0.5]], ToyObjectives(), progress=False, name="half",
                     single_point=True)
    result = summarize([grid, half], reference_point=[0.0, 0.0], baseline="grid")
    front = {f.method: f for f in result.indicators}
    # the toy front is the line pos + long = 1 at pos = 0, .2, .4, .5, .6, .8, 1: every point is Pareto-optimal
    assert len(front["grid"].pareto_labels) == 7 and front["grid"].spearman == pytest.approx([1.0, 1.0])
    staircase = sum(0.2 * y for y in (0.8, 0.6, 0.4, 0.2)) + 0.1 * 0.1  # (0.5, 0.5) adds a 0.1 x 0.1 square
    assert front["grid"].hypervolume == pytest.approx(staircase)
    assert front["grid"].coverage == pytest.approx(1.0)
    assert front["half"].hypervolume == pytest.approx(0.25) and front["half"].spearman == [None, None]
    assert front["half"].coverage == pytest.approx(0.25 / staircase)
    assert front["half"].spread == [0.0, 0.0] and front["grid"].spread == pytest.approx([1.0, 1.0])
    rel = [r for r in result.relative_values if r.method == "half"]
    assert len(rel) == 7  # the single point is compared at every weighting of the baseline
    at_half = next(r for r in rel if r.label == "w=(0.5,0.5)")
    assert at_half.relative == pytest.approx(0.0) and at_half.value == pytest.approx(grid.points[-1].weighted_value)
    at_one = next(r for r in rel if r.label == "w=(1,0)")
    assert at_one.relative == pytest.approx(1 - at_one.value / at_one.baseline_value)
    # at w=(1,0), value alpha 0.1: half has pos 0.5 and KL 11 * 0.01; the grid point pos 1.0 and KL 11 * 0.51
    assert at_one.value == pytest.approx(0.9 * 0.5 - 0.1 * 0.11)
    assert at_one.baseline_value == pytest.approx(0.9 * 1.0 - 0.1 * 5.61)


def test_write_outputs_from_a_sweep(tmp_path):
    sweep = run_sweep(ToyPolicy(), PROMPTS, simplex_grid(2, 3), ToyObjectives(), progress=False, name="toy")
    paths = write_outputs(sweep, tmp_path / "run")
    assert set(paths) == {"json", "csv", "pareto", "kl_reward", "html"}  # one method: no ratios, no ratio plot
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert load_results(tmp_path / "run").sweeps[0] == sweep


def _config(tmp_path, **changes) -> dict:
    data = {
        "objectives": ["pos", "long"],
        "methods": [
            {"name": "toy", "kind": "python", "factory": "tests.eval_helpers:make_counted"},
            {"name": "plain", "kind": "python", "factory": "tests.eval_helpers:make_plain", "single_point": True},
            {"name": "nokl", "kind": "python", "factory": "tests.eval_helpers:make_toy", "args": {"kl": False}},
        ],
        "prompts": PROMPTS,
        "weights": {"simplex": 5, "explicit": [[1.5, -0.5]], "held_out": [[0.3, 0.7]],
                    "targets": [{"weights": [0.3, 0.7], "values": {"pos": 0.5}}]},
        "generation": {"max_new_tokens": 4, "seed": 7},
        "judge": {"criteria": ["conciseness"]},
        "n_bootstrap": 50,
        "output_dir": str(tmp_path / "run"),
    }
    data.update(changes)
    return data


def test_evaluate_config_writes_every_file_and_a_readable_report(tmp_path):
    eval_helpers.BUILT.clear()
    config = parse_config(_config(tmp_path))
    result, paths = evaluate(config, objectives=ToyObjectives(), judge=ShorterJudge(), progress=False)
    assert eval_helpers.BUILT == ["toy"]
    for kind in ("json", "csv", "pareto", "kl_reward", "relative_value", "html"):
        assert paths[kind].is_file() and paths[kind].stat().st_size > 0, kind
    assert [len(s.points) for s in result.sweeps] == [7, 1, 7]  # 5 simplex + 1 extrapolated + 1 held-out
    toy = result.sweeps[0]
    held = [p for p in toy.points if p.held_out]
    assert [p.weights for p in held] == [[0.3, 0.7]] and held[0].targets == [0.5, None]
    indicators = {f.method: f for f in result.indicators}
    assert indicators["toy"].calibration_error == [pytest.approx(0.2), None]  # achieved round(10 * 0.3) / 10
    assert indicators["toy"].hypervolume_held_out is not None

    # judge: every method against the baseline (the first), "shorter wins" is order-independent: no inconsistency
    assert {(j.method_a, j.method_b) for j in result.judge} == {("plain", "toy"), ("nokl", "toy")}
    assert all(j.inconsistent == 0 and j.consistent == 3 for j in result.judge)
    nokl_vs_toy = [j for j in result.judge if j.method_a == "nokl"]
    assert all(j.ties == 3 for j in nokl_vs_toy)  # same toy policy, same text
    assert result.judge_model == "shorter-stub"

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 15 and {r["held_out"] for r in rows} == {"True", "False"}
    stored = json.loads(paths["json"].read_text())
    assert stored["config_hash"] == config.fingerprint() and stored["reference_point_source"].startswith("derived")

    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 3
    assert html.count("<table>") >= 5 and "Front indicators" in html and "Judge" in html
    assert "held-out" in html and 'class="held"' in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html  # responses and prompts escaped
    assert str(round(result.reference_point[0], 6)) in html


def test_rerun_only_redraws_and_other_config_is_refused(tmp_path):
    eval_helpers.BUILT.clear()
    config = parse_config(_config(tmp_path, judge=None))
    evaluate(config, objectives=ToyObjectives(), progress=False)
    json_path = tmp_path / "run" / "results.json"
    before = json_path.read_text()
    (tmp_path / "run" / "report.html").unlink()
    (tmp_path / "run" / "pareto.png").unlink()
    _, paths = evaluate(config, objectives=ToyObjectives(), progress=False)
    assert eval_helpers.BUILT == ["toy"]  # nothing was generated again
    assert json_path.read_text() == before and paths["html"].is_file() and paths["pareto"].is_file()

    other = parse_config(_config(tmp_path, judge=None, value_alpha=0.5))
    with pytest.raises(ConfigError, match="another configuration"):
        evaluate(other, objectives=ToyObjectives(), progress=False)
    result, _ = evaluate(other, objectives=ToyObjectives(), progress=False, overwrite=True)
    assert result.config_hash == other.fingerprint() and eval_helpers.BUILT == ["toy", "toy"]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown policy kind 'nope'.*python"):
        evaluate(parse_config(_config(tmp_path, methods=[{"name": "x", "kind": "nope"}])),
                 objectives=ToyObjectives(), progress=False)
    bad_param = [{"name": "x", "kind": "python", "factory": "tests.eval_helpers:make_toy", "temperature": 2}]
    with pytest.raises(ConfigError, match="does not take"):
        evaluate(parse_config(_config(tmp_path, methods=bad_param)), objectives=ToyObjectives(), progress=False)
    with pytest.raises(WeightsError, match="expected 2 weights, one per objective"):
        evaluate(parse_config(_config(tmp_path, weights={"explicit": [[1, 0, 0]]})), objectives=ToyObjectives(),
                 progress=False)
    with pytest.raises(ConfigError, match="empty"):
        evaluate(parse_config(_config(tmp_path, weights={})), objectives=ToyObjectives(), progress=False)
    missing_prompts = _config(tmp_path, prompts_file=str(tmp_path / "no_prompts.txt"))
    del missing_prompts["prompts"]
    with pytest.raises(ConfigError, match="prompts file .*no_prompts.txt.* does not exist"):
        evaluate(parse_config(missing_prompts), objectives=ToyObjectives(), progress=False)
    with pytest.raises(ConfigError, match="unique"):
        parse_config(_config(tmp_path, methods=[{"name": "x", "kind": "python"}] * 2))
    with pytest.raises(ConfigError, match="baseline 'zzz'"):
        parse_config(_config(tmp_path, baseline="zzz"))
    with pytest.raises(ConfigError, match="weights.simplx"):
        parse_config(_config(tmp_path, weights={"simplx": 3}))
    with pytest.raises(ConfigError, match="either inline"):
        parse_config(_config(tmp_path, prompts=None))


def test_cli_evaluate_and_its_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("polyalign.evaluation.run.build_objectives", lambda specs: ToyObjectives())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    data = _config(tmp_path, judge=None, prompts=None, prompts_file="prompts.jsonl")
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(data))
    main(["evaluate", "--config", str(path), "--no-progress", "--out", str(tmp_path / "cli")])
    assert (tmp_path / "cli" / "report.html").is_file()
    assert "hypervolume" in capsys.readouterr().out

    data["value_alpha"] = 0.9
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--config", str(path), "--no-progress", "--out", str(tmp_path / "cli")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "another configuration" in err and err.count("\n") == 1

    with pytest.raises(SystemExit):
        main(["evaluate", "--config", str(tmp_path / "missing.yaml")])
    assert "does not exist" in capsys.readouterr().err


def test_alpha_sweep_gives_one_front_per_alpha(tmp_path):
    methods = [{"name": "toy", "kind": "python", "factory": "tests.eval_helpers:make_toy", "alphas": [0.2, 0.6]}]
    config = parse_config(_config(tmp_path, methods=methods, judge=None, weights={"simplex": 3}))
    result, paths = evaluate(config, objectives=ToyObjectives(), progress=False)
    points = result.sweeps[0].points
    assert [(p.weights, p.alpha) for p in points][:2] == [([0.0, 1.0], 0.2), ([0.0, 1.0], 0.6)]
    assert all(p.value_alpha == p.alpha for p in points)  # V uses the generation alpha when there is one
    for p in points:
        assert p.value[0] == pytest.approx((1 - p.alpha) * p.mean[0] - p.alpha * p.kl)
    assert [(f.method, f.alpha, f.n_points) for f in result.indicators] == [("toy", 0.2, 3), ("toy", 0.6, 3)]
    assert "w=(0.5,0.5) a=0.6" in paths["html"].read_text()


def test_example_config_is_valid():
    from polyalign.evaluation import load_config

    config = load_config("configs/eval-personas.yaml")
    assert [m.kind for m in config.methods] == ["mod", "model"] and config.judge.criteria == ["conciseness", "quality"]
    weightings = config.weightings(["sentiment", "concise"], [None])
    assert len(weightings) == 11 + 2 + 1 and weightings[-1].held_out  # the line shares (0,1), (1,0) with the simplex
    assert (2.0, -1.0) in [w.weights for w in weightings]


@pytest.mark.parametrize("factory, message", [
    ("no_such_module_xyz:make", r"method 'x': policy factory 'no_such_module_xyz:make': cannot import"),
    ("tests.eval_helpers:no_such_factory", r"'tests.eval_helpers' has no attribute 'no_such_factory'"),
    ("tests.eval_helpers:ToyObjectives.names", r"is a list, not a callable"),
    ("make_toy", r"must be MODULE:FUNCTION"),
])
def test_bad_python_method_factories_are_config_errors(factory, message):
    with pytest.raises(ConfigError, match=message):
        build_method("python", "x", ["a", "b"], {"factory": factory})


def test_python_method_factory_by_dotted_path():
    method = build_method("python", "x", ["a", "b"], {"factory": "tests.eval_helpers.make_toy"})
    assert method.name == "x" and list(method.policy.objectives) == ["pos", "long"]
