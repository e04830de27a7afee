"""``evaluate(config)``: every configured method on the same prompts, seeds and weightings, then the files.

Methods come from the registry in :mod:`polyalign.evaluation.methods`; this loop never looks at their kind.
"""

from __future__ import annotations

from pathlib import Path

from polyalign import models
from polyalign.errors import ConfigError
from polyalign.evaluation.config import EvalConfig
from polyalign.evaluation.grid import Weighting, build_weightings
from polyalign.evaluation.judge import JudgeModel, load_judge
from polyalign.evaluation.methods import build_method
from polyalign.evaluation.outputs import check_run_dir, draw, write_outputs
from polyalign.evaluation.preflight import check_before_run
from polyalign.evaluation.results import EvaluationResult
from polyalign.evaluation.summary import judge_counts, summarize
from polyalign.evaluation.sweep import ObjectiveSetLike, run_sweep


def build_objectives(specs: list[str]) -> ObjectiveSetLike:
    """The configured objectives (:func:`polyalign.objectives.build`)."""
    from polyalign.objectives import build

    return build(specs)


def evaluate(
    config: EvalConfig,
    *,
    objectives: ObjectiveSetLike | None = None,
    judge: JudgeModel | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[EvaluationResult, dict[str, Path]]:
    """Run (or, when the output folder already holds this config's results, only redraw) an evaluation.

    ``objectives`` and ``judge`` override the ones the config names (for callers that already hold them).
    """
    run_dir = Path(config.output_dir)
    config_hash = config.fingerprint()
    existing = None if overwrite else check_run_dir(run_dir, config_hash)
    if existing is not None:
        return existing, {"json": run_dir / "results.json", **draw(existing, run_dir, config.examples)}

    check_before_run(config, check_judge_model=judge is None)
    prompts = config.load_prompts()
    objectives = objectives if objectives is not None else build_objectives(config.objectives)
    names = list(objectives.names)
    sweeps = []
    for mc in config.methods:
        with models.scope():  # each method's models are freed before the next method loads its own
            method = build_method(mc.kind, mc.name, names, mc.params)
            weightings = config.weightings(names, mc.alphas) if method.weightings is None else \
                build_weightings(names, method.weightings, mc.alphas)
            if method.single_point:
                weightings = [Weighting(tuple(1.0 / len(names) for _ in names), a) for a in mc.alphas]
            sweeps.append(run_sweep(
                method.policy, prompts, weightings, objectives, config=config.generation, progress=progress,
                name=mc.name, value_alpha=config.value_alpha, batch_size=config.batch_size,
                score_batch_size=config.score_batch_size, n_bootstrap=config.n_bootstrap,
                single_point=method.single_point,
            ))
            del method
    result = summarize(sweeps, config.reference_point, config.baseline_name)
    result.config = config.model_dump(mode="json")
    result.config_hash = config_hash
    if config.judge is not None:
        names_all = [m.name for m in config.methods]
        pairs = config.judge.pairs or [(n, config.baseline_name) for n in names_all if n != config.baseline_name]
        if not pairs:
            raise ConfigError("the judge needs two methods: add a method or list judge pairs")
        if judge is None:
            judge = load_judge(config.judge.model, config.judge.device, config.judge.batch_size)
        result.judge = judge_counts(judge, sweeps, pairs, config.judge.criteria, config.judge.tie, progress)
        result.judge_model = getattr(judge, "name", config.judge.model)
    return result, write_outputs(result, run_dir, config.examples)
