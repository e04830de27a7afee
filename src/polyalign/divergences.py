"""f-divergences for decoding-time alignment: f, grad f, its inverse and the barrier flag.

Pure elementwise torch functions, one :class:`Divergence` per row of the table in DESIGN.md ("The math").
The f-regularised optimal policy is ``pi = pi_ref * (grad f)^-1(R/beta - Z)``; MOD combines such policies
through ``grad f`` and its inverse (see :mod:`polyalign.combine`). Probability ratios ``pi_i/pi_ref`` span
hundreds of orders of magnitude and ``(grad f)^-1`` has a pole at ``grad_hi`` when that is finite, so each
divergence also carries log-space forms measured from the edge ``E = grad_hi`` (or 0 when ``grad_hi = inf``):
``grad_gap(t) = E - grad f(e^t)``, ``log_inv_gap(d) = log (grad f)^-1(E - d)`` and
``inv_slope(t) = d log x / dy = 1 / (x f''(x))`` at ``x = e^t`` (Newton's derivative when solving for Z; powers of
x are clamped to e^+-700, far beyond where they matter, because exp's denormal path is ~10x slower on CPU).
Near the pole the gap ``d`` keeps full relative precision where ``E - d`` would round to ``E``.

Only barrier divergences (``grad f(0) = -inf``) are usable for MOD: Shi et al. 2024, Theorem 3.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from polyalign.errors import DivergenceError

Fn = Callable[[Tensor], Tensor]
LOG2 = math.log(2.0)
INF = math.inf


def _exp(t: Tensor) -> Tensor:
    return torch.exp(t.clamp(-700, 700))


@dataclass(frozen=True)
class Divergence:
    """One f-divergence. ``(grad_lo, grad_hi)`` is the open range of ``grad f`` on ``(0, inf)``: the domain
    of ``grad_inv``. Outside it ``grad_inv`` returns ``0`` (below) or ``inf`` (above), matching the limits."""

    name: str
    f: Fn
    grad: Fn
    grad_inv: Fn
    is_barrier: bool
    grad_lo: float
    grad_hi: float
    grad_gap: Fn
    log_inv_gap: Fn
    inv_slope: Fn
    log_inv_gap_from: Callable[[Tensor, Tensor], Tensor] | None = None  # (d, lower bound on the answer): warm start

    @property
    def edge(self) -> float:
        """E: the point the gap forms are measured from (``grad_hi``, or 0 when unbounded)."""
        return self.grad_hi if math.isfinite(self.grad_hi) else 0.0


# --- reverse KL: f = x log x, grad f = log x + 1 -------------------------------------------------------

def _reverse_kl() -> Divergence:
    return Divergence(
        name="reverse_kl",
        f=lambda x: torch.xlogy(x, x),
        grad=lambda x: torch.log(x) + 1,
        grad_inv=lambda y: torch.exp(y - 1),
        is_barrier=True, grad_lo=-INF, grad_hi=INF,
        grad_gap=lambda t: -(t + 1),
        log_inv_gap=lambda d: -d - 1,
        inv_slope=torch.ones_like,
    )


# --- forward KL: f = -log x, grad f = -1/x ----------------------------------------------------------------

def _forward_kl() -> Divergence:
    return Divergence(
        name="forward_kl",
        f=lambda x: -torch.log(x),
        grad=lambda x: -1 / x,
        grad_inv=lambda y: torch.where(y < 0, -1 / y, INF),
        is_barrier=True, grad_lo=-INF, grad_hi=0.0,
        grad_gap=lambda t: torch.exp(-t),
        log_inv_gap=lambda d: -torch.log(d.clamp(min=0)),
        inv_slope=lambda t: _exp(t),
    )


# --- Jensen-Shannon: f = x log x - (x+1) log((x+1)/2), grad f = log(2x/(1+x)) -----------------------------

def _jsd_log_inv_gap(d: Tensor) -> Tensor:
    # x = 1/(2e^-y - 1) at y = log 2 - d: log x = -d - log(-expm1(-d)), accurate near the pole d -> 0+.
    neg_d = -d
    return neg_d - torch.log(torch.expm1(neg_d).neg_().clamp_(min=0))


def _jsd() -> Divergence:
    return Divergence(
        name="jsd",
        f=lambda x: torch.xlogy(x, x) - (x + 1) * torch.log((x + 1) / 2),
        grad=lambda x: LOG2 + torch.log(x) - torch.log1p(x),
        grad_inv=lambda y: torch.exp(_jsd_log_inv_gap(LOG2 - y)),
        is_barrier=True, grad_lo=-INF, grad_hi=LOG2,
        grad_gap=lambda t: torch.nn.functional.softplus(-t),
        log_inv_gap=_jsd_log_inv_gap,
        inv_slope=lambda t: 1 + _exp(t),
    )


# --- alpha-divergence, a in (0, 1): f = (x^(1-a) - (1-a) x - a) / (a (a-1)), grad f = (1 - x^-a)/a ------------

@lru_cache(maxsize=64)
def _alpha(a: float) -> Divergence:
    # The sign of the denominator makes f convex; it is the f whose gradient is the table's (1 - x^-a)/a.
    return Divergence(
        name=f"alpha:{a:g}",
        f=lambda x: (x ** (1 - a) - (1 - a) * x - a) / (a * (a - 1)),
        grad=lambda x: (1 - x ** (-a)) / a,
        grad_inv=lambda y: torch.exp(-torch.log1p((-a * y).clamp(min=-1)) / a),
        is_barrier=True, grad_lo=-INF, grad_hi=1 / a,
        grad_gap=lambda t: torch.exp(-a * t) / a,
        log_inv_gap=lambda d: -torch.log((a * d).clamp(min=0)) / a,
        inv_slope=lambda t: _exp(a * t),
    )


# --- Jeffrey: f = x log x - log x, grad f = log x + 1 - 1/x (no closed-form inverse) ------------------------

_JEFFREY_MAX_ITER = 60


def jeffrey_log_grad_inv(y: Tensor, start: Tensor | None = None) -> Tensor:
    """``t = log x`` solving ``h(t) = t + 1 - e^-t = y`` by Newton in float64, started at a lower bound.

    h is increasing and concave, so Newton started at a lower bound climbs monotonically to the root and
    converges quadratically, with error after a step ``<= step^2 / 2`` (as ``|h''| / 2h' <= 1/2``): a step below
    1e-7 leaves an error below 5e-15. Bounds: ``e^-t >= 1 - t`` gives ``h(t) <= 2t``, so ``t >= y/2``;
    ``h(t) <= t + 1`` gives ``t >= y - 1``; for ``y <= 0`` the root is ``<= 0``, where ``h(t) <= 1 - e^-t`` gives
    ``t >= -log(1 - y)``. ``start``, if given, must also be a lower bound (a warm start, e.g. a tangent of the
    convex map y -> t from a nearby solution).
    """
    dtype = y.dtype
    y = y.to(torch.float64)
    finite = torch.isfinite(y)
    yf = torch.where(finite, y, 0.0)
    positive = yf > 0
    t = torch.maximum(torch.maximum(yf - 1, yf / 2), torch.where(positive, 0.0, -torch.log1p(-yf.clamp(max=0))))
    if start is not None:
        t = torch.maximum(t, torch.where(finite, start.to(torch.float64), t))
    y_minus_1 = yf - 1
    for _ in range(_JEFFREY_MAX_ITER if y.numel() else 0):
        e = torch.exp((-t).clamp_(-700, 700))  # exact for |y| < e^700; exp off that range is ~10x slower on CPU
        step = (y_minus_1 - t + e) / (1 + e)  # = (y - h(t)) / h'(t) >= 0 up to rounding: iterates stay below the root
        t = t + step
        if bool(torch.linalg.vector_norm(step, ord=math.inf) <= 1e-7):
            break
    return torch.where(finite, t, y).to(dtype)  # y = -inf -> log x = -inf; y = inf -> inf; nan stays nan


def _jeffrey() -> Divergence:
    return Divergence(
        name="jeffrey",
        f=lambda x: torch.xlogy(x, x) - torch.log(x),
        grad=lambda x: torch.log(x) + 1 - 1 / x,
        grad_inv=lambda y: torch.exp(jeffrey_log_grad_inv(y)),
        is_barrier=True, grad_lo=-INF, grad_hi=INF,
        grad_gap=lambda t: torch.exp(-t) - t - 1,
        log_inv_gap=lambda d: jeffrey_log_grad_inv(-d),
        log_inv_gap_from=lambda d, start: jeffrey_log_grad_inv(-d, start),
        inv_slope=torch.sigmoid,
    )


# --- non-barrier divergences: defined for completeness, rejected by MOD ------------------------------------

def _no_inverse(y: Tensor) -> Tensor:
    raise DivergenceError("total variation's gradient sgn(x-1)/2 is a step function and has no inverse; "
                          "MOD cannot use it (Shi et al. 2024, Theorem 3). Use a barrier divergence such as "
                          "reverse_kl.")


def _total_variation() -> Divergence:
    return Divergence(
        name="total_variation",
        f=lambda x: (x - 1).abs() / 2,
        grad=lambda x: torch.sign(x - 1) / 2,
        grad_inv=_no_inverse,
        is_barrier=False, grad_lo=-0.5, grad_hi=0.5,
        grad_gap=lambda t: (1 - torch.sign(t)) / 2,
        log_inv_gap=_no_inverse,
        inv_slope=_no_inverse,
    )


def _chi_squared() -> Divergence:
    return Divergence(
        name="chi_squared",
        f=lambda x: (x - 1) ** 2,
        grad=lambda x: 2 * (x - 1),
        grad_inv=lambda y: (1 + y / 2).clamp(min=0),
        is_barrier=False, grad_lo=-2.0, grad_hi=INF,
        grad_gap=lambda t: -2 * torch.expm1(t),
        log_inv_gap=lambda d: torch.log((1 - d / 2).clamp(min=0)),
        inv_slope=lambda t: _exp(-t) / 2,
    )


# --- registry -----------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[], Divergence]] = {
    "reverse_kl": _reverse_kl, "forward_kl": _forward_kl, "jsd": _jsd, "jeffrey": _jeffrey,
    "total_variation": _total_variation, "chi_squared": _chi_squared,
}
_BUILT = {name: build() for name, build in _BUILDERS.items()}
_ALIASES = {
    "kl": "reverse_kl", "rkl": "reverse_kl", "reverse_kl": "reverse_kl", "kl_reverse": "reverse_kl",
    "fkl": "forward_kl", "forward_kl": "forward_kl", "kl_forward": "forward_kl",
    "js": "jsd", "jsd": "jsd", "jensen_shannon": "jsd",
    "jeffrey": "jeffrey", "jeffreys": "jeffrey",
    "tv": "total_variation", "total_variation": "total_variation",
    "chi2": "chi_squared", "chi_squared": "chi_squared", "chi_square": "chi_squared", "pearson": "chi_squared",
}
_ALPHA = re.compile(r"alpha(?:[:=_\- ](?P<a>.*))?")


def available() -> list[str]:
    """Canonical names accepted by :func:`get` (``alpha:<a>`` takes its parameter a in (0, 1))."""
    return ["reverse_kl", "forward_kl", "jsd", "alpha:<a>", "jeffrey", "total_variation", "chi_squared"]


def _unknown(name: object) -> DivergenceError:
    aliases = ", ".join(sorted(set(_ALIASES) - set(_BUILDERS)))
    return DivergenceError(f"unknown divergence {name!r}: use one of {', '.join(available())} "
                           f"(aliases: {aliases}; e.g. 'alpha:0.5')")


def _alpha_from(text: str | None, name: str) -> Divergence:
    if not text:
        raise DivergenceError(f"divergence {name!r} needs its parameter a in (0, 1), written e.g. 'alpha:0.5'")
    try:
        a = float(text)
    except ValueError:
        raise DivergenceError(f"divergence {name!r}: alpha parameter {text!r} is not a number; "
                              "write e.g. 'alpha:0.5'") from None
    if not 0 < a < 1:
        raise DivergenceError(f"divergence {name!r}: alpha must lie strictly between 0 and 1, got {a:g} "
                              "(a -> 1 is reverse KL, a -> 0 forward KL: use those names instead)")
    return _alpha(a)


def get(name: str | Divergence) -> Divergence:
    """The divergence called ``name`` (case-insensitive; aliases such as kl, fkl, js, tv, chi2; 'alpha:0.3')."""
    if isinstance(name, Divergence):
        return name
    if not isinstance(name, str):
        raise _unknown(name)
    key = name.strip().lower()
    match = _ALPHA.fullmatch(key)
    if match:
        return _alpha_from(match.group("a"), name)
    key = re.sub(r"[\s\-]+", "_", key)
    if key not in _ALIASES:
        raise _unknown(name)
    return _BUILT[_ALIASES[key]]


def require_barrier(div: Divergence) -> Divergence:
    """``div`` itself if ``grad f(0) = -inf``; otherwise a :class:`DivergenceError` with the reason."""
    if not div.is_barrier:
        raise DivergenceError(
            f"divergence {div.name!r} is not a barrier function (grad f(0) = {div.grad_lo:g} is finite, not -inf), "
            "so multi-objective decoding cannot use it: by Shi et al. 2024 (MOD), Theorem 3, without the barrier "
            "property any decoding or merging algorithm can be arbitrarily sub-optimal. "
            "Use reverse_kl, forward_kl, jsd, alpha:<a> or jeffrey.")
    return div
