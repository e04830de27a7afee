"""Evaluation: weight sweeps of any steerable policy, Pareto fronts, hypervolume, steerability, judge win
rates, plots and an HTML report.

>>> sweep = run_sweep(policy, prompts, simplex_grid(2, 11), objectives)
>>> paths = write_outputs(sweep, "runs/demo")          # json, csv, pareto/kl_reward/relative_value PNG, html
>>> result, paths = evaluate(load_config("eval.yaml"))  # several methods, held-out weightings, judge
"""

from polyalign.evaluation.config import EvalConfig, load_config, parse_config
from polyalign.evaluation.grid import Weighting, build_weightings, line_grid, simplex_grid
from polyalign.evaluation.indicators import hypervolume, pareto_mask
from polyalign.evaluation.judge import LMJudge, compare, load_judge
from polyalign.evaluation.methods import Method, build_method, register_policy
from polyalign.evaluation.outputs import load_results, write_outputs
from polyalign.evaluation.preflight import check_before_run
from polyalign.evaluation.results import EvaluationResult, PointResult, SweepResult
from polyalign.evaluation.run import evaluate
from polyalign.evaluation.summary import summarize
from polyalign.evaluation.sweep import run_sweep

__all__ = [
    "EvalConfig", "EvaluationResult", "LMJudge", "Method", "PointResult", "SweepResult",
    "Weighting", "build_method", "build_weightings", "check_before_run", "compare", "evaluate", "hypervolume",
    "line_grid", "load_config", "load_judge", "load_results", "pareto_mask", "parse_config", "register_policy",
    "run_sweep", "simplex_grid", "summarize", "write_outputs",
]
