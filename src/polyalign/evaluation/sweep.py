"""Run one steerable policy over a list of weightings, score the responses and summarise each weighting.

The loop only talks to :class:`~polyalign.interface.SteerablePolicy`: every method goes through the same
calls with the same prompts and the same :class:`~polyalign.interface.GenerationConfig` (hence the same
seed) at every weighting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scipy import stats

from polyalign.errors import ConfigError, ObjectiveError, WeightsError
from polyalign.evaluation.grid import Weighting, check_weighting
from polyalign.evaluation.indicators import kl_regularised_value
from polyalign.evaluation.results import PointResult, Response, SweepResult
from polyalign.interface import (
    Generation,
    GenerationConfig,
    SteerablePolicy,
    check_alpha,
    check_prompts,
    weight_domain,
)

DEFAULT_VALUE_ALPHA = 0.1


class ObjectiveSetLike(Protocol):
    """What the sweep needs from :class:`polyalign.objectives.ObjectiveSet`."""

    names: list[str]

    def score(self, prompts, responses, references=None, batch_size: int = 32, progress: bool = False
              ) -> torch.Tensor: ...


class _Progress(Progress):
    """A rich progress bar that vanishes when its stage fails, leaving the error line alone on stderr."""

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        if exc_type is None or self.disable:
            super().__exit__(exc_type, exc_val, exc_tb)
        else:  # not Progress.stop, which adds a blank line on a non-terminal stderr
            self.live.transient = True
            self.live.stop()


def progress_bar(enabled: bool) -> Progress:
    """The rich progress bar every evaluation stage uses (disabled: prints nothing)."""
    return _Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy); a single value or constant sample gives a point."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def as_weightings(weightings: Sequence[Weighting | Sequence[float]], objectives: Sequence[str],
                  alpha: float | None = None) -> list[Weighting]:
    """Accept :class:`Weighting` objects or plain weight vectors (which get ``alpha``); validate each."""
    out = []
    for w in weightings:
        if isinstance(w, Weighting):
            out.append(Weighting(check_weighting(w.weights, objectives), check_alpha(w.alpha), w.held_out, w.targets))
        else:
            out.append(Weighting(check_weighting(w, objectives), check_alpha(alpha)))
    if not out:
        raise ConfigError("the weight grid is empty: give at least one weighting")
    return out


def objective_order(policy_names: Sequence[str], names: Sequence[str]) -> list[int]:
    """Where each of the policy's objectives sits among the scored ``names``: weights are matched by name when the
    policy names the same objectives (in any order), by position when it names none of them; else refused."""
    policy_names, names = list(policy_names), list(names)
    if sorted(policy_names) == sorted(names):
        return [names.index(n) for n in policy_names]
    if len(policy_names) == len(names) and not set(policy_names) & set(names):
        return list(range(len(names)))
    raise WeightsError(
        f"the policy steers objectives {policy_names} but {names} are scored: name the policy's objectives after the "
        "scored ones (weights are matched by name), or give as many with other names (matched by position)")


def generate_all(policy: SteerablePolicy, prompts: list[str], weightings: list[Weighting],
                 config: GenerationConfig, batch_size: int | None, progress: Progress | None = None,
                 description: str = "generate", order: Sequence[int] | None = None) -> list[list[Generation]]:
    """One list of generations per weighting, prompts in order, batched by ``batch_size`` prompts; ``order`` maps
    the policy's objectives to the weighting's (:func:`objective_order`)."""
    step = batch_size or len(prompts)
    task = progress.add_task(description, total=len(weightings) * len(prompts)) if progress else None
    out = []
    for weighting in weightings:
        gens: list[Generation] = []
        for start in range(0, len(prompts), step):
            batch = prompts[start:start + step]
            weights = [weighting.weights[i] for i in order] if order is not None else list(weighting.weights)
            result = policy.generate(batch, weights, alpha=weighting.alpha, config=config)
            if len(result) != len(batch):
                raise ConfigError(f"{type(policy).__name__}.generate returned {len(result)} generations for "
                                  f"{len(batch)} prompts")
            gens.extend(result)
            if progress is not None:
                progress.advance(task, len(batch))
        out.append(gens)
    return out


def summarise_point(weighting: Weighting, gens: list[Generation], scores: np.ndarray, names: list[str],
                    value_alpha: float, n_bootstrap: int, seed: int) -> PointResult:
    """Means, bootstrap CIs, KL and KL-regularised values of one weighting's scored responses."""
    kls = [g.kl for g in gens]
    kl = None if any(k is None for k in kls) else np.asarray(kls, dtype=float)
    a = weighting.alpha if weighting.alpha is not None else value_alpha
    cis = [bootstrap_ci(scores[:, i], n_resamples=n_bootstrap, seed=seed) for i in range(len(names))]
    kl_ci = bootstrap_ci(kl, n_resamples=n_bootstrap, seed=seed) if kl is not None else (None, None)
    weighted = scores @ np.asarray(weighting.weights, dtype=float)
    targets = None
    if weighting.targets:
        targets = [weighting.targets.get(n) for n in names]
    return PointResult(
        weights=list(weighting.weights), alpha=weighting.alpha, value_alpha=a, held_out=weighting.held_out,
        label=weighting.label, mean=scores.mean(axis=0).tolist(),
        ci_low=[c[0] for c in cis], ci_high=[c[1] for c in cis],
        kl=None if kl is None else float(kl.mean()), kl_ci_low=kl_ci[0], kl_ci_high=kl_ci[1],
        value=[kl_regularised_value(scores[:, i], kl, a) for i in range(len(names))],
        weighted_value=kl_regularised_value(weighted, kl, a), targets=targets,
        responses=[
            Response(prompt_index=j, prompt=g.prompt, text=g.text, scores=scores[j].tolist(), kl=g.kl,
                     finish_reason=g.finish_reason)
            for j, g in enumerate(gens)
        ],
    )


def run_sweep(
    policy: SteerablePolicy,
    prompts: Sequence[str],
    weightings: Sequence[Weighting | Sequence[float]],
    objectives: ObjectiveSetLike,
    alpha: float | None = None,
    config: GenerationConfig | None = None,
    progress: bool = True,
    *,
    name: str | None = None,
    value_alpha: float = DEFAULT_VALUE_ALPHA,
    batch_size: int | None = None,
    score_batch_size: int = 32,
    n_bootstrap: int = 1000,
    single_point: bool = False,
) -> SweepResult:
    """Generate with ``policy`` at every weighting, score with ``objectives``, summarise every weighting.

    ``weightings`` are :class:`Weighting` objects or plain weight vectors (in ``objectives.names`` order);
    plain vectors get ``alpha``. ``value_alpha`` is the alpha of V = E[(1-alpha) R - alpha KL] at weightings
    generated without an alpha. Timings of generation and scoring come back in ``SweepResult.timings``.
    """
    names = list(objectives.names)
    prompts = check_prompts(prompts)
    points = as_weightings(weightings, names, alpha)
    value_alpha = check_alpha(value_alpha)
    policy_names = list(getattr(policy, "objectives", []))
    order = objective_order(policy_names, names)
    config = config or GenerationConfig()
    if config.n != 1:
        raise ConfigError("evaluation scores one response per prompt and weighting: set generation.n to 1")
    name = name or type(policy).__name__
    domain = weight_domain(policy)
    skipped = {}
    for w in points:
        reason = domain.violation(torch.tensor([[w.weights[i] for i in order]], dtype=torch.float64))
        if reason is not None:
            skipped[w.label] = reason
    points = [w for w in points if w.label not in skipped]
    if not points:
        raise WeightsError(f"{name}: no weighting of the grid lies in the policy's domain ({domain.description})")
    with progress_bar(progress) as bar:
        t0 = time.perf_counter()
        gens = generate_all(policy, prompts, points, config, batch_size, bar, f"{name}: generate", order)
        t1 = time.perf_counter()
    flat = [g for per_point in gens for g in per_point]
    raw = objectives.score([g.prompt for g in flat], [g.text for g in flat], batch_size=score_batch_size,
                           progress=progress)
    scores = np.asarray(torch.as_tensor(raw, dtype=torch.float64))
    if scores.shape != (len(flat), len(names)):
        raise ObjectiveError(f"objectives returned scores of shape {scores.shape}, expected {(len(flat), len(names))}")
    t2 = time.perf_counter()
    n = len(prompts)
    results = [
        summarise_point(w, g, scores[k * n:(k + 1) * n], names, value_alpha, n_bootstrap, seed=k)
        for k, (w, g) in enumerate(zip(points, gens, strict=True))
    ]
    higher = list(getattr(objectives, "higher_is_better", [True] * len(names)))
    return SweepResult(
        method=name, objectives=names, policy_objectives=policy_names, higher_is_better=higher,
        single_point=single_point, points=results, skipped=skipped,
        timings={"generation": t1 - t0, "scoring": t2 - t1, "summary": time.perf_counter() - t2},
    )
