"""Weightings to sweep: simplex grids, straight lines (with extrapolation), explicit lists, alpha sweeps.

A :class:`Weighting` is one point of a sweep: a weight vector over the objectives, an optional KL strength
``alpha`` passed to the policy, whether it is held out (no method trained on it), and optional target
values a method promised for it (for calibration).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from polyalign.errors import ConfigError, WeightsError
from polyalign.interface import check_alpha
from polyalign.weights import check_weights


@dataclass(frozen=True)
class Weighting:
    """One point of a sweep."""

    weights: tuple[float, ...]
    alpha: float | None = None
    held_out: bool = False
    targets: dict[str, float] | None = field(default=None, compare=False, hash=False)

    @property
    def label(self) -> str:
        """A short stable name: ``w=(0.3,0.7)`` or ``w=(0.3,0.7) a=0.1``."""
        text = "w=(" + ",".join(_num(w) for w in self.weights) + ")"
        return text if self.alpha is None else f"{text} a={_num(self.alpha)}"


def _num(x: float) -> str:
    return f"{x:.4g}"


def simplex_grid(m: int, n_points: int) -> list[tuple[float, ...]]:
    """Every weight vector with entries in ``{0, 1/(n-1), ..., 1}`` summing to 1 (``n_points`` per edge).

    ``m=2, n_points=11`` gives the 11 weightings (0, 1), (0.1, 0.9), ..., (1, 0); ``m=3, n_points=5`` gives 15.
    Ordered by the first weight, increasing.
    """
    if m < 1:
        raise WeightsError(f"a simplex grid needs at least one objective, got m={m}")
    if n_points < 1 or (n_points == 1 and m > 1):
        raise WeightsError(f"a simplex grid over {m} objectives needs at least 2 points per edge, got {n_points}")
    if m == 1:
        return [(1.0,)]
    steps = n_points - 1
    grid = []
    for head in itertools.product(range(steps + 1), repeat=m - 1):
        if sum(head) <= steps:
            counts = (*head, steps - sum(head))
            grid.append(tuple(round(c / steps, 12) for c in counts))
    return sorted(grid)


def line_grid(start: Sequence[float], stop: Sequence[float], n_points: int) -> list[tuple[float, ...]]:
    """``n_points`` evenly spaced weightings from ``start`` to ``stop``, both included.

    Extrapolated weights such as the MOD paper's (5, -4) are lines that leave the simplex, e.g.
    ``line_grid((-4, 5), (5, -4), 10)``.
    """
    if len(start) != len(stop):
        raise WeightsError(f"line start {list(start)} and stop {list(stop)} have different lengths")
    if n_points < 2:
        raise WeightsError(f"a line of weightings needs at least 2 points, got {n_points}")
    return [
        tuple(round(a + (b - a) * k / (n_points - 1), 12) for a, b in zip(start, stop, strict=True))
        for k in range(n_points)
    ]


def check_weighting(weights: Sequence[float], objectives: Sequence[str]) -> tuple[float, ...]:
    """One finite, not-all-zero weight per objective (:func:`polyalign.weights.check_weights`)."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence | torch.Tensor):
        raise WeightsError(f"a weighting is a list of numbers, one per objective {list(objectives)}, got {weights!r}")
    return tuple(check_weights([list(weights)], 1, objectives)[0].tolist())


def build_weightings(
    objectives: Sequence[str],
    grid: Sequence[Sequence[float]],
    alphas: Sequence[float | None] = (None,),
    held_out: Sequence[Sequence[float]] = (),
    targets: dict[tuple[float, ...], dict[str, float]] | None = None,
) -> list[Weighting]:
    """The cross product of weight vectors (grid first, then held-out ones) and alphas, duplicates removed."""
    vectors = [check_weighting(w, objectives) for w in grid]
    held = [check_weighting(w, objectives) for w in held_out]
    if not vectors and not held:
        raise ConfigError("the weight grid is empty: give a simplex size, a line, or explicit weightings")
    if not alphas:
        raise ConfigError("the alpha list is empty: give [null] to use each method's default")
    clash = set(vectors) & set(held)
    if clash:
        raise ConfigError(f"weightings {sorted(clash)} are both in the grid and held out; list each once")
    targets = targets or {}
    out: list[Weighting] = []
    seen: set[tuple] = set()
    for vector, is_held in [(v, False) for v in vectors] + [(v, True) for v in held]:
        for alpha in alphas:
            key = (vector, alpha)
            if key not in seen:
                seen.add(key)
                out.append(Weighting(vector, check_alpha(alpha), is_held, targets.get(vector)))
    return out
