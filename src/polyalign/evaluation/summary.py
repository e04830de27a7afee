"""From sweeps to an :class:`EvaluationResult`: fronts, indicators, Figure 4 ratios and judge counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polyalign.errors import ConfigError
from polyalign.evaluation import indicators as ind
from polyalign.evaluation.judge import JudgeModel, compare
from polyalign.evaluation.results import (
    EvaluationResult,
    FrontIndicators,
    JudgeCount,
    PointResult,
    RelativeValue,
    SweepResult,
)
from polyalign.evaluation.sweep import progress_bar


def pair_points(a: SweepResult, b: SweepResult) -> list[tuple[PointResult, PointResult, PointResult]]:
    """Points of ``a`` and ``b`` at the same weighting and alpha, plus the point that names the weighting.

    A single-point method (one point) is paired with every point of the other method.
    """
    if a.single_point and b.single_point:
        return [(a.points[0], b.points[0], a.points[0])]
    if a.single_point or b.single_point:
        single, many = (a, b) if a.single_point else (b, a)
        return [(p, q, q) if single is a else (q, p, q) for q in many.points for p in single.points[:1]]
    index = {(tuple(p.weights), p.alpha): p for p in b.points}
    return [(p, index[key], p) for p in a.points if (key := (tuple(p.weights), p.alpha)) in index]


def value_at(point: PointResult, weights: Sequence[float], alpha: float) -> float | None:
    """V_{alpha, w.R} (CLP paper Eq. 1) of a point's responses under the weighting ``weights``."""
    scores = np.asarray([r.scores for r in point.responses], dtype=float)
    kls = [r.kl for r in point.responses]
    kl = None if any(k is None for k in kls) else kls
    return ind.kl_regularised_value(scores @ np.asarray(weights, dtype=float), kl, alpha)


def relative_values(sweeps: Sequence[SweepResult], baseline: str) -> list[RelativeValue]:
    """CLP paper Figure 4: ``1 - V(method)/V(baseline)`` at every shared weighting, for every other method."""
    by_name = {s.method: s for s in sweeps}
    if baseline not in by_name:
        raise ConfigError(f"baseline {baseline!r} is not among the methods {list(by_name)}")
    base = by_name[baseline]
    out = []
    for sweep in sweeps:
        if sweep.method == baseline:
            continue
        for p, q, at in pair_points(sweep, base):
            v, vb = value_at(p, at.weights, at.value_alpha), value_at(q, at.weights, at.value_alpha)
            out.append(RelativeValue(method=sweep.method, baseline=baseline, label=at.label, held_out=at.held_out,
                                     value=v, baseline_value=vb, relative=ind.relative_value(v, vb)))
    return out


def front_indicators(sweeps: Sequence[SweepResult], reference: Sequence[float]) -> list[FrontIndicators]:
    """Indicators per (method, generation alpha); coverage is against all methods' points together."""
    higher = sweeps[0].higher_is_better
    union = np.asarray([p.mean for s in sweeps for p in s.points], dtype=float)
    out = []
    for sweep in sweeps:
        for alpha in dict.fromkeys(p.alpha for p in sweep.points):
            pts = [p for p in sweep.points if p.alpha == alpha]
            means = np.asarray([p.mean for p in pts], dtype=float)
            weights = np.asarray([p.weights for p in pts], dtype=float)
            mask = ind.pareto_mask(means, higher)
            held = [p.mean for p in pts if p.held_out]
            rho = ind.steerability(weights, means)
            calibration = None
            if any(p.targets for p in pts):
                targets = np.asarray([[np.nan if t is None else t for t in (p.targets or [None] * len(higher))]
                                      for p in pts], dtype=float)
                calibration = ind.calibration_error(means, targets)
            out.append(FrontIndicators(
                method=sweep.method, alpha=alpha, n_points=len(pts),
                pareto_labels=[p.label for p, keep in zip(pts, mask, strict=True) if keep],
                hypervolume=ind.hypervolume(means, reference, higher),
                hypervolume_held_out=ind.hypervolume(np.asarray(held), reference, higher) if held else None,
                coverage=ind.coverage(means, union, reference, higher),
                spearman=[r for r, _ in rho], spearman_p=[p for _, p in rho],
                spread=ind.spread(means), spacing=ind.spacing(means, higher), calibration_error=calibration,
            ))
    return out


def judge_counts(judge: JudgeModel, sweeps: Sequence[SweepResult], pairs: Sequence[tuple[str, str]],
                 criteria: Sequence[str], tie: bool = True, progress: bool = False) -> list[JudgeCount]:
    """Win/tie/loss counts of the first method of each pair against the second, per weighting and criterion."""
    by_name = {s.method: s for s in sweeps}
    out = []
    with progress_bar(progress) as bar:
        task = bar.add_task("judge", total=len(pairs) * len(criteria))
        for name_a, name_b in pairs:
            matched = pair_points(by_name[name_a], by_name[name_b])
            prompts = [r.prompt for p, _, _ in matched for r in p.responses]
            texts_a = [r.text for p, _, _ in matched for r in p.responses]
            texts_b = [r.text for _, q, _ in matched for r in q.responses]
            for criterion in criteria:
                outcomes = compare(judge, criterion, prompts, texts_a, texts_b, tie)
                start = 0
                for p, _, at in matched:
                    chunk = outcomes[start:start + len(p.responses)]
                    start += len(p.responses)
                    out.append(JudgeCount(
                        method_a=name_a, method_b=name_b, criterion=criterion, label=at.label, held_out=at.held_out,
                        wins=chunk.count("win"), ties=chunk.count("tie"), losses=chunk.count("loss"),
                        inconsistent=chunk.count("inconsistent"),
                    ))
                bar.advance(task)
    return out


def summarize(sweeps: Sequence[SweepResult], reference_point: Sequence[float] | None = None,
              baseline: str | None = None) -> EvaluationResult:
    """Indicators and Figure 4 ratios for sweeps run on the same prompts; the judge is added separately."""
    sweeps = list(sweeps)
    if not sweeps:
        raise ConfigError("nothing to summarise: no sweeps")
    names = sweeps[0].objectives
    for s in sweeps[1:]:
        if s.objectives != names:
            raise ConfigError(f"sweeps scored different objectives: {names} and {s.objectives} ({s.method})")
    higher = sweeps[0].higher_is_better
    points = np.asarray([p.mean for s in sweeps for p in s.points], dtype=float)
    if reference_point is None:
        reference = ind.default_reference(points, higher)
        source = "derived: each objective's worst mean over all methods, moved outwards by 10% of its range"
    else:
        reference = [float(x) for x in reference_point]
        if len(reference) != len(names):
            raise ConfigError(f"reference point {reference} needs one value per objective {names}")
        source = "configured"
    baseline = baseline or sweeps[0].method
    return EvaluationResult(
        objectives=names, higher_is_better=higher, reference_point=reference, reference_point_source=source,
        baseline=baseline, sweeps=sweeps, indicators=front_indicators(sweeps, reference),
        relative_values=relative_values(sweeps, baseline),
    )
