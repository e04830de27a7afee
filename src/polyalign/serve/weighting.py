"""A request's weighting: from ``objective_weights`` (names) to the policy's weight vector, the ranges the API
lists, and the decision-support spread of ``n`` weightings around one.

The spread rule (CLP paper, "decision support": show several responses over the trade-offs and let the user
pick): with the request's weights ``w`` (sum ``s``) and radius ``r``, choice ``k`` is decoded at

    ``w_k = (1 - r) * w + r * s * p_k``

where ``p_1..p_n`` are ``n`` points spread evenly over the simplex: for two objectives the evenly spaced points
from (1, 0) to (0, 1); for more, the vertices first, then each next point the one of a fine simplex lattice
farthest from those already chosen. Scaling by ``s`` keeps the sum of the weights (MOD's KL strength, sum w =
1/beta), and a point of the simplex stays on it. A one-weight policy (DeRa's lambda) spreads ``lambda`` evenly
over ``[(1 - r) lambda, (1 + r) lambda]``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from polyalign.serve.schemas import ApiError
from polyalign.weights import WeightDomain

SUGGESTED_REAL_RANGE = (-0.5, 1.5)
"""Slider range of the playground for policies whose weights are any reals (MOD)."""


def default_weights(objectives: list[str]) -> list[float]:
    """The weighting of a request that names none: equal weights summing to 1 (one weight: 1)."""
    return [1.0 / len(objectives)] * len(objectives)


def request_weights(named: dict[str, float] | None, objectives: list[str], domain: WeightDomain) -> list[float]:
    """The weight vector, in the policy's order, for ``objective_weights``; names not given weigh 0."""
    if named is None:
        return default_weights(objectives)
    unknown = [k for k in named if k not in objectives]
    if unknown:
        raise ApiError(400, f"unknown objective(s) {unknown}: this policy steers {objectives}", "objective_weights",
                       "unknown_objective")
    if not named:
        raise ApiError(400, f"objective_weights is empty: name at least one of {objectives}", "objective_weights")
    return [float(named.get(name, 0.0)) for name in objectives]


def spread_points(n: int, m: int) -> list[list[float]]:
    """``n`` points spread evenly over the simplex of ``m`` objectives (module docstring)."""
    if m == 1:
        return [[1.0]] * n
    if m == 2:
        return [[1 - k / (n - 1), k / (n - 1)] for k in range(n)] if n > 1 else [[0.5, 0.5]]
    chosen = [[1.0 if i == j else 0.0 for i in range(m)] for j in range(min(n, m))]
    lattice = _lattice(m, max(2, min(12, round(200 ** (1 / (m - 1))))))
    while len(chosen) < n:
        chosen.append(max(lattice, key=lambda p: min(math.dist(p, c) for c in chosen)))
    return chosen


def _lattice(m: int, h: int) -> list[list[float]]:
    """The simplex lattice of resolution ``h``: every point with coordinates in multiples of 1/h."""
    return [[c / h for c in counts] for counts in itertools.product(range(h + 1), repeat=m) if sum(counts) == h]


def spread(weights: list[float], n: int, radius: float, domain: WeightDomain) -> list[list[float]]:
    """The ``n`` weightings of decision support around ``weights`` (module docstring)."""
    if domain.kind == "scalar":
        lam = weights[0]
        return [[lam * (1 - radius + 2 * radius * k / (n - 1))] for k in range(n)]
    total = sum(weights)
    scale = total if total > 0 else 1.0
    return [[(1 - radius) * w + radius * scale * p for w, p in zip(weights, point, strict=True)]
            for point in spread_points(n, len(weights))]


def describe_weights(objectives: list[str], domain: WeightDomain) -> list[dict[str, Any]]:
    """What ``/v1/models`` lists per objective: its valid range (None: unbounded) and the playground's range."""
    out = []
    for name, default in zip(objectives, default_weights(objectives), strict=True):
        if domain.kind == "simplex":
            low, high, suggested = 0.0, 1.0, (0.0, 1.0)
        else:
            low, high, suggested = None, None, SUGGESTED_REAL_RANGE if domain.kind == "real" else (0.0, 2.0)
        out.append({"name": name, "min": low, "max": high, "default": default, "suggested_range": list(suggested)})
    return out
