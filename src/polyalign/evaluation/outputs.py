"""Files of a run folder: results.json (the source of truth), results.csv, PNG plots and report.html.

Everything but results.json is drawn from it, so re-running on existing results only redraws. The JSON
stores the config hash; a folder written under another configuration is refused, never mixed. A plot with
nothing to show (no KL, no second method for the ratios) is not written.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from polyalign.errors import ConfigError
from polyalign.evaluation.plots import kl_reward_plot, pareto_plot, relative_value_plot
from polyalign.evaluation.report import render_html
from polyalign.evaluation.results import EvaluationResult, SweepResult
from polyalign.evaluation.summary import summarize
from polyalign.files import make_dir, read_text, write_text

RESULTS_JSON = "results.json"
OUTPUT_FILES = (RESULTS_JSON, "results.csv", "pareto.png", "kl_reward.png", "relative_value.png", "report.html")
"""Every file a run folder may receive."""


def load_results(run_dir: str | Path) -> EvaluationResult | None:
    """The results stored in ``run_dir``, or None if it has none."""
    path = Path(run_dir) / RESULTS_JSON
    if not path.exists():
        return None
    text = read_text(path, "results file")
    try:
        return EvaluationResult.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a polyalign results file ({exc.error_count()} problems); "
                          "choose another output folder or delete it") from None


def check_run_dir(run_dir: str | Path, config_hash: str) -> EvaluationResult | None:
    """Existing results of the same configuration, None if there are none, an error if they differ."""
    existing = load_results(run_dir)
    if existing is not None and existing.config_hash != config_hash:
        raise ConfigError(
            f"{Path(run_dir) / RESULTS_JSON} holds results of another configuration (hash "
            f"{existing.config_hash[:12]}, this one {config_hash[:12]}): choose another output_dir, delete the "
            "folder, or pass --overwrite"
        )
    return existing


def write_csv(result: EvaluationResult, path: Path) -> Path:
    """One row per method and weighting: weights, means with CIs, KL, values, Figure 4 ratio."""
    names = result.objectives
    m = len(names)
    ratio = {(r.method, r.label): r.relative for r in result.relative_values}
    header = ["method", "single_point", "weighting", "held_out", "alpha", "value_alpha", "n",
              *[f"w_{n}" for n in names], *[f"mean_{n}" for n in names], *[f"ci_low_{n}" for n in names],
              *[f"ci_high_{n}" for n in names], "kl", "kl_ci_low", "kl_ci_high", *[f"V_{n}" for n in names],
              "V_weighted", "relative_value"]
    make_dir(path.parent)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for s in result.sweeps:
            for p in s.points:
                writer.writerow([s.method, s.single_point, p.label, p.held_out, p.alpha, p.value_alpha,
                                 len(p.responses), *p.weights[:m], *p.mean, *p.ci_low, *p.ci_high, p.kl, p.kl_ci_low,
                                 p.kl_ci_high, *p.value, p.weighted_value, ratio.get((s.method, p.label))])
    return path


def results_hash(result: EvaluationResult) -> str:
    """sha256 of the sweeps, for results summarised without a config (:func:`write_outputs` on sweeps)."""
    data = "\n".join(s.model_dump_json() for s in result.sweeps)
    return hashlib.sha256(data.encode()).hexdigest()


def draw(result: EvaluationResult, run_dir: str | Path, examples: int = 3) -> dict[str, Path]:
    """Everything derived from the results: CSV, the plots that have something to show and the HTML report."""
    run_dir = Path(run_dir)
    paths = {
        "csv": write_csv(result, run_dir / "results.csv"),
        "pareto": pareto_plot(result, run_dir / "pareto.png"),
        "kl_reward": kl_reward_plot(result, run_dir / "kl_reward.png"),
        "relative_value": relative_value_plot(result, run_dir / "relative_value.png"),
    }
    paths = {kind: path for kind, path in paths.items() if path is not None}
    paths["html"] = write_text(run_dir / "report.html", render_html(result, paths, examples), "report")
    return paths


def write_outputs(
    results: EvaluationResult | SweepResult | Sequence[SweepResult],
    run_dir: str | Path,
    examples: int = 3,
) -> dict[str, Path]:
    """Write results.json and draw every derived file; sweeps are summarised first (indicators, ratios).

    Returns the paths by kind: ``json``, ``csv``, ``pareto``, ``kl_reward`` and ``relative_value`` (where they
    have something to show), ``html``. Results without a config hash get :func:`results_hash` instead.
    """
    if isinstance(results, SweepResult):
        results = [results]
    if not isinstance(results, EvaluationResult):
        results = summarize(list(results))
    if not results.config_hash:
        results = results.model_copy(update={"config_hash": results_hash(results)})
    run_dir = make_dir(run_dir, "evaluation output folder")
    json_path = write_text(run_dir / RESULTS_JSON, results.model_dump_json(indent=1), "results file")
    return {"json": json_path, **draw(results, run_dir, examples)}
