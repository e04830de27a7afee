"""The weight rules, written once: every layer (policies, ``combine``, evaluation grids, the CLI, the server)
validates a weight vector here.

Each policy declares a :class:`WeightDomain`: MOD takes any real weights (negative ones extrapolate), CLP and
soups take the simplex, DeRa one scalar. A weighting outside a policy's domain is refused with the reason, and
an evaluation sweep skips it (noting why) instead of aborting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from polyalign.errors import WeightsError

SUM_TOL = 1e-6
"""|sum w - 1| at or below this counts as summing to one (MOD's reference cancels; simplex membership)."""

WeightsLike = Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


@dataclass(frozen=True)
class WeightDomain:
    """The weightings a policy accepts: ``real`` (finite, not all zero), ``simplex`` (non-negative, summing to
    one) or ``scalar`` (one real weight)."""

    kind: Literal["real", "simplex", "scalar"]

    @property
    def description(self) -> str:
        return {
            "real": "any finite weights, not all zero (negative ones extrapolate)",
            "simplex": f"non-negative weights summing to 1 (within {SUM_TOL:g})",
            "scalar": "one finite weight (the strength lambda)",
        }[self.kind]

    def violation(self, weights: torch.Tensor) -> str | None:
        """Why the first offending row of finite, not-all-zero weights ``[N, M]`` is outside the domain, or None."""
        if self.kind == "scalar" and weights.shape[-1] != 1:
            return f"this policy takes one weight, got {weights.shape[-1]}"
        if self.kind == "simplex":
            bad = (weights < 0).any(-1) | ((weights.sum(-1) - 1).abs() > SUM_TOL)
            if bool(bad.any()):
                row = weights[int(bad.nonzero()[0])].tolist()
                return f"weights {row} are not on the simplex: this policy needs {self.description}"
        return None

    def contains(self, weights: Sequence[float]) -> bool:
        return self.violation(torch.as_tensor([list(weights)], dtype=torch.float64)) is None


REAL = WeightDomain("real")
SIMPLEX = WeightDomain("simplex")
SCALAR = WeightDomain("scalar")


def check_values(w: torch.Tensor, what: str = "weights") -> None:
    """Finite, and not all zero in any row (the last dimension)."""
    if not bool(torch.isfinite(w).all()):
        raise WeightsError(f"{what} must be finite numbers, got NaN or inf in {w.tolist()}")
    if bool((w == 0).all(-1).any()):
        raise WeightsError(f"all {what} are zero (in at least one row): give at least one non-zero weight")


def check_weights(weights: WeightsLike, n_rows: int, objectives: Sequence[str],
                  domain: WeightDomain = REAL) -> torch.Tensor:
    """Validate ``weights`` (one vector, or one per row) and return a float64 ``[n_rows, M]`` tensor."""
    m = len(objectives)
    try:
        w = torch.as_tensor(weights, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weights must be numbers, one per objective {list(objectives)}: {exc}") from None
    if w.ndim == 1:
        w = w.unsqueeze(0).expand(n_rows, -1)
    if w.ndim != 2 or w.shape[-1] != m:
        got = f"{w.shape[-1]} ({w[0].tolist()})" if w.ndim == 2 and len(w) else f"shape {tuple(w.shape)}"
        raise WeightsError(f"expected {m} weights, one per objective {list(objectives)} in that order, got {got}")
    if w.shape[0] != n_rows:
        raise WeightsError(f"got {w.shape[0]} weight vectors for {n_rows} prompts; give one, or one per prompt")
    check_values(w)
    reason = domain.violation(w)
    if reason is not None:
        raise WeightsError(reason)
    return w.contiguous()


def sums_to_one(w: torch.Tensor) -> torch.Tensor:
    """Boolean per row: whether the weights sum to one within :data:`SUM_TOL`."""
    return (w.sum(-1) - 1).abs() <= SUM_TOL


def parse_weights(text: str, option: str = "--weights") -> list[float]:
    """``"0.5,0.5"`` or ``"0.5, -0.5"`` -> floats. Spaces separate nothing: ``"1 2"`` is an error, not 12."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise WeightsError(f"{option} expects comma-separated numbers such as 0.5,0.5, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise WeightsError(f"{option} expects comma-separated numbers such as 0.5,0.5, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise WeightsError(f"{option} must be finite numbers, got {text!r}")
    return values
