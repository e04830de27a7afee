"""Front indicators: Pareto filtering, hypervolume, steerability, spread, calibration, relative value.

Pareto filtering is a few lines of numpy written here; the hypervolume comes from ``moocore``.
Every function takes plain arrays of objective means (rows = weightings, columns = objectives) and a
``maximize`` flag per objective, so that objectives where lower is better need no sign juggling outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import moocore
import numpy as np
from scipy import stats

from polyalign.errors import ConfigError


def _as_max(points: np.ndarray | Sequence, maximize: Sequence[bool] | None) -> np.ndarray:
    """Points flipped so that larger is better in every column."""
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ConfigError(f"points must be a 2-D array [n_points, n_objectives], got shape {p.shape}")
    sign = np.ones(p.shape[1]) if maximize is None else np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    if sign.shape != (p.shape[1],):
        raise ConfigError(f"{len(sign)} maximize flags for {p.shape[1]} objectives")
    return p * sign


def pareto_mask(points, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """True for points that no other point weakly dominates while strictly beating it somewhere.

    Duplicated non-dominated points are all kept.
    """
    p = _as_max(points, maximize)
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    geq = (p[:, None, :] >= p[None, :, :]).all(-1)  # geq[j, i]: j at least as good as i everywhere
    gt = (p[:, None, :] > p[None, :, :]).any(-1)
    return ~(geq & gt).any(axis=0)


def hypervolume(points, reference: Sequence[float], maximize: Sequence[bool] | None = None) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (moocore); points beyond it count nothing."""
    p = _as_max(points, maximize)
    ref = _as_max(np.asarray(reference, dtype=float)[None, :], maximize)[0]
    if ref.shape != (p.shape[1],):
        raise ConfigError(f"reference point {list(reference)} needs {p.shape[1]} coordinates")
    inside = p[(p > ref).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(moocore.hypervolume(inside, ref=ref, maximise=True))


def default_reference(points, maximize: Sequence[bool] | None = None, margin: float = 0.1) -> list[float]:
    """The worst value of every objective over ``points``, moved outwards by ``margin`` times its range."""
    p = _as_max(points, maximize)
    low, high = p.min(axis=0), p.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    ref = low - margin * span
    sign = np.ones(p.shape[1]) if maximize is None else np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    return (ref * sign).tolist()


def steerability(weights, means) -> list[tuple[float | None, float | None]]:
    """Spearman correlation (and p-value) of each objective's mean with its own weight, across weightings.

    None where it is undefined: a weight or an objective that does not vary.
    """
    w = np.asarray(weights, dtype=float)
    r = np.asarray(means, dtype=float)
    out: list[tuple[float | None, float | None]] = []
    for i in range(r.shape[1]):
        if len(w) < 2 or np.ptp(w[:, i]) == 0 or np.ptp(r[:, i]) == 0:
            out.append((None, None))
            continue
        result = stats.spearmanr(w[:, i], r[:, i])
        out.append((float(result.statistic), float(result.pvalue)))
    return out


def spread(means) -> list[float]:
    """Range covered by each objective as the weights move: max minus min of the means."""
    r = np.asarray(means, dtype=float)
    return np.ptp(r, axis=0).tolist() if len(r) else []


def spacing(points, maximize: Sequence[bool] | None = None) -> float | None:
    """Schott's spacing of the Pareto points: std of nearest-neighbour L1 distances (0 = evenly spread)."""
    p = _as_max(points, maximize)
    front = p[pareto_mask(p)]
    if len(front) < 2:
        return None
    dist = np.abs(front[:, None, :] - front[None, :, :]).sum(-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.std(dist.min(axis=1), ddof=1)) if len(front) > 2 else 0.0


def coverage(points, union_points, reference: Sequence[float], maximize: Sequence[bool] | None = None) -> float | None:
    """Share of the hypervolume of all methods' points together that these points reach (1 = the whole front)."""
    total = hypervolume(union_points, reference, maximize)
    return None if total == 0 else hypervolume(points, reference, maximize) / total


def calibration_error(achieved, targets) -> list[float | None]:
    """Mean absolute error between achieved means and promised targets, per objective (NaN targets skipped)."""
    a = np.asarray(achieved, dtype=float)
    t = np.asarray(targets, dtype=float)
    if a.shape != t.shape:
        raise ConfigError(f"achieved shape {a.shape} and target shape {t.shape} differ")
    out: list[float | None] = []
    for i in range(a.shape[1] if a.ndim == 2 else 0):
        ok = ~np.isnan(t[:, i])
        out.append(float(np.abs(a[ok, i] - t[ok, i]).mean()) if ok.any() else None)
    return out


def kl_regularised_value(rewards, kl, alpha: float) -> float | None:
    """CLP paper Eq. 1: ``V_{alpha,R} = E[(1 - alpha) R - alpha KL]`` from per-sample rewards and KLs.

    Without KL estimates it is defined only at ``alpha = 0``.
    """
    r = np.asarray(rewards, dtype=float)
    if kl is None:
        return float(r.mean()) if alpha == 0 else None
    return float(((1.0 - alpha) * r - alpha * np.asarray(kl, dtype=float)).mean())


def relative_value(value: float | None, baseline: float | None) -> float | None:
    """CLP paper Figure 4: ``1 - V(method) / V(RS)``; None where either is missing or V(RS) is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return 1.0 - value / baseline
