"""MOD's per-step combination of next-token distributions (Shi et al. 2024, "Decoding-time language model
alignment with multiple objectives"). Written by hand because no library does this; see DESIGN.md.

    pi(s) ∝ pi_ref(s) * (grad f)^-1( -Z + sum_i w_i grad f(pi_i(s) / pi_ref(s)) ),   Z: sum_s pi(s) = 1.

Reverse KL has the closed form ``log pi = (1 - sum w) log pi_ref + sum_i w_i log pi_i - log Z`` (DeRa when
M = 1); every other barrier divergence solves Z per row by safeguarded Newton on the log of the mass.

Conventions for zero probabilities (log-prob ``-inf``: masked tokens, padded vocabulary slots):

* a model with weight 0 (the reference too, in reverse KL with ``sum w = 1``) is ignored;
* ``pi_ref(s) = 0`` gives ``pi(s) = 0`` (the result stays inside the reference's support);
* ``pi_i(s) = 0`` for an expert with ``w_i > 0`` gives ``pi(s) = 0``: the argument is ``-inf`` (below the
  inverse's domain) and ``(grad f)^-1(-inf) = 0`` is its limit;
* ``pi_i(s) = 0`` for an expert with ``w_i < 0`` on a token not already excluded above makes the argument
  ``+inf``: the result is undefined (all mass would go to that token) and a :class:`WeightsError` says so.

Finite arguments always stay inside the inverse's domain at the solved Z, since the mass blows up as
``max_s arg(s) - Z`` reaches ``grad_hi``; that is why negative weights are fine when all probabilities are > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from polyalign import divergences
from polyalign.divergences import Divergence
from polyalign.errors import PolyalignError, WeightsError
from polyalign.weights import SUM_TOL, check_values

_NEWTON_TOL = 1e-12  # |log mass| at which Z counts as solved; an exact renormalisation follows
_MAX_ITER = 100
_MASS_TOL = 1e-2  # log of the largest row mass accepted as log-probs: room for 16-bit rounding of log_softmax
_LOG_TINY = -745.0  # log of the smallest float64


def combine_logprobs(reference: Tensor | None, experts: Tensor, weights: Tensor | Sequence[float],
                     divergence: str | Divergence = "reverse_kl", *, validate: bool = True) -> Tensor:
    """Normalised log-probs ``[..., V]`` of MOD's combined next-token distribution (DESIGN.md, "MOD").

    ``reference``: log-probs ``[..., V]`` or ``None`` (reverse KL with weights summing to 1 only);
    ``experts``: log-probs ``[M, ..., V]``; ``weights``: ``[M]``, or ``[..., M]`` whose leading dims match the
    batch's leading dims (e.g. ``[B, M]`` for log-probs ``[B, T, V]``) and broadcast over the rest.
    Computes in float64 and returns the inputs' dtype on their device; ``-inf`` follows the module's conventions.
    Raises :class:`WeightsError` (weights, undefined negative weights, no common support),
    :class:`DivergenceError` (unknown or non-barrier f) and :class:`PolyalignError` (shapes; NaN, logits or
    probabilities passed as log-probs). ``validate=False`` skips the value checks of the inputs (their
    normalisation, NaN, the weights' finiteness), which cost a device sync each: for callers that produced
    the log-probs with ``log_softmax`` and validated the weights themselves, such as the decoding loop.
    """
    div = divergences.require_barrier(divergences.get(divergence))
    out_dtype = _check_logprobs(reference, experts, validate)
    work = torch.float32 if experts.device.type == "mps" else torch.float64  # mps has no float64
    w = _as_weights(weights, experts, validate).to(work)
    total = w.sum(0)  # [*, 1]: sum of the weights per row
    experts = experts.to(work)
    reference = None if reference is None else reference.to(work)
    if div.name == "reverse_kl":
        logits = _reverse_kl_logits(reference, experts, w, total, div)
        return _normalise(logits, div).to(out_dtype)
    if reference is None:
        raise WeightsError(f"divergence {div.name!r} needs the reference log-probs: the reference cancels only for "
                           "reverse_kl with weights summing to 1. Pass reference=... or use reverse_kl.")
    return _solve(reference, experts, w, div).to(out_dtype)


def combine_logits(reference: Tensor | None, experts: Tensor, weights: Tensor | Sequence[float],
                   divergence: str | Divergence = "reverse_kl") -> Tensor:
    """:func:`combine_logprobs` on raw logits (log-softmaxed first)."""
    reference = None if reference is None else torch.log_softmax(reference, dim=-1)
    return combine_logprobs(reference, torch.log_softmax(experts, dim=-1), weights, divergence)


# --- validation at the boundary ------------------------------------------------------------------------------

def _check_logprobs(reference: Tensor | None, experts: Tensor, validate: bool = True) -> torch.dtype:
    if not isinstance(experts, Tensor) or experts.ndim < 2 or experts.shape[0] == 0 or experts.shape[-1] == 0:
        shape = tuple(experts.shape) if isinstance(experts, Tensor) else type(experts).__name__
        raise PolyalignError(f"experts must be a tensor of log-probs shaped [M, ..., V] with M >= 1, got {shape}")
    tensors = {"experts": experts}
    if reference is not None:
        if not isinstance(reference, Tensor) or reference.shape != experts.shape[1:]:
            shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
            raise PolyalignError(f"reference log-probs have shape {shape} but experts have {tuple(experts.shape)}: "
                                 f"the reference must be shaped like one expert, {tuple(experts.shape[1:])}")
        if reference.device != experts.device:
            raise PolyalignError(f"reference is on {reference.device} but experts on {experts.device}: move both "
                                 "to one device")
        tensors["reference"] = reference
    for name, x in tensors.items():
        if not x.is_floating_point():
            raise PolyalignError(f"{name} must be floating-point log-probs, got dtype {x.dtype}")
        if validate and x.numel():
            _check_normalised(name, x)
    return experts.dtype if reference is None else torch.promote_types(reference.dtype, experts.dtype)


def _check_normalised(name: str, x: Tensor) -> None:
    """NaN, +inf, or logits or probabilities passed as log-probs: no row may hold more than probability 1.

    Sub-normalised rows (tokens masked to ``-inf`` without renormalising) pass and are combined as given.
    """
    total = x.sum()  # one cheap reduction: NaN or +inf anywhere shows (log-probs <= 0 cannot overflow up)
    if bool(total.isnan() | (total == torch.inf)):
        raise PolyalignError(f"{name} log-probs contain NaN or +inf; pass log_softmax outputs "
                             "(-inf is fine and means probability 0)")
    worst = torch.logsumexp(x.double(), dim=-1).max()
    if bool(worst > _MASS_TOL):
        raise PolyalignError(
            f"{name} are not log-probs: a row's probabilities sum to exp({float(worst):.4g}) > 1. Pass log_softmax "
            "outputs; for raw logits use combine_logits; for probabilities take their log first")


def _as_weights(weights: Tensor | Sequence[float], experts: Tensor, validate: bool = True) -> Tensor:
    """Weights ``[M]`` or ``[*leading batch dims, M]`` as float64 ``[M, *batch, 1]``-broadcastable, validated."""
    n_experts, batch = experts.shape[0], experts.shape[1:-1]
    try:
        w = torch.as_tensor(weights, dtype=torch.float64).to(experts.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weights must be numbers, one per expert, got {weights!r} ({exc})") from None
    if w.ndim == 0 or w.shape[-1] != n_experts:
        got = "a scalar" if w.ndim == 0 else f"{w.shape[-1]} weights (shape {tuple(w.shape)})"
        raise WeightsError(f"got {got} for {n_experts} experts: give one weight per expert, in the experts' order, "
                           f"shaped [{n_experts}] or [..., {n_experts}]")
    lead = tuple(w.shape[:-1])
    if len(lead) > len(batch) or any(n not in (1, b) for n, b in zip(lead, batch, strict=False)):
        raise WeightsError(f"weights of shape {tuple(w.shape)} do not fit the batch {tuple(batch)}: use "
                           f"[{n_experts}] for all rows, or [*leading batch dims, {n_experts}] such as "
                           f"[{', '.join(map(str, batch[:1]))}, {n_experts}] (one weight vector per prompt)")
    if validate:
        check_values(w)
    trail = (1,) * (len(batch) - len(lead))
    return w.movedim(-1, 0).reshape(n_experts, *lead, *trail, 1)


# --- the combination -------------------------------------------------------------------------------------

def _has_zeros(log_probs: Tensor) -> bool:
    """Whether any probability is 0 (one reduction; inputs hold no NaN)."""
    return log_probs.numel() > 0 and bool(log_probs.amin() == -torch.inf)


def _weighted_sum(values: Tensor, w: Tensor, excluded: Tensor | None, div: Divergence) -> Tensor:
    """``sum_i w_i values_i`` over experts with the module's conventions for ``values = -inf``."""
    if not _has_zeros(values):
        out = (w * values).sum(0)
        return out if excluded is None else out.masked_fill(excluded, -torch.inf)
    zero = torch.isneginf(values)
    out = (w * values.masked_fill(zero, 0.0)).sum(0)
    excluded = (zero & (w > 0)).any(0) | (False if excluded is None else excluded)
    undefined = zero & (w < 0) & ~excluded
    if bool(undefined.any()):
        where = undefined.nonzero()[0].tolist()
        i, weight = where[0], w.expand_as(values)[tuple(where)].item()
        raise WeightsError(
            f"divergence {div.name!r}: weight {weight:g} of expert {i} is negative, but expert {i} gives token "
            f"{where[-1]} (batch index {tuple(where[1:-1])}) probability 0 (or a ratio to the reference too small for "
            "float64) where the reference and the positively weighted experts do not; w_i * grad f(0) is then +inf "
            f"and the combination is undefined. Use non-negative weights, or keep expert {i}'s distribution strictly "
            "positive (no top-k/top-p masking before combining).")
    return out.masked_fill(excluded, -torch.inf)


def _reverse_kl_logits(reference: Tensor | None, experts: Tensor, w: Tensor, total: Tensor,
                       div: Divergence) -> Tensor:
    """``(1 - sum w) log pi_ref + sum_i w_i log pi_i`` (DESIGN.md, reverse KL), unnormalised."""
    cancels = (total - 1).abs() <= SUM_TOL
    if reference is None and not bool(cancels.all()):
        raise WeightsError(f"reference=None works only for reverse_kl with weights summing to 1 in every row (got sums "
                           f"{total.flatten().tolist()[:8]}): pass the reference log-probs, or weights that sum to 1")
    logits = _weighted_sum(experts, w, None, div)
    if reference is None:
        return logits
    if not _has_zeros(reference):
        return logits + (1 - total) * reference
    zero_ref = torch.isneginf(reference)
    logits = logits + (1 - total) * reference.masked_fill(zero_ref, 0.0)
    return logits.masked_fill(zero_ref & ~cancels, -torch.inf)


def _normalise(logits: Tensor, div: Divergence) -> Tensor:
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    if not bool(torch.isfinite(lse).all()):
        if bool((logits.isnan() | torch.isposinf(logits)).any()):  # inf - inf: the weighted sum overflowed
            raise WeightsError(f"divergence {div.name!r}: the weighted sum of log-probs overflowed float64; the "
                               "weights are too large in magnitude, use smaller ones")
        raise WeightsError(f"divergence {div.name!r}: no token has nonzero probability under all models with a "
                           "nonzero weight (their supports do not overlap in at least one row); check the masks or "
                           "the weights")
    return logits - lse


def _solve(reference: Tensor, experts: Tensor, w: Tensor, div: Divergence) -> Tensor:
    """General barrier f: Z per row by safeguarded Newton on the log of the mass, then renormalise.

    Arguments are kept as gaps below the inverse's edge E (see :mod:`polyalign.divergences`): with
    ``arg(s) = sum_i w_i grad f(pi_i/pi_ref) - (sum w) E`` (a constant shift of Z) and ``spread(s) = max arg - arg(s)``,
    ``log pi(s) = log pi_ref(s) + log_inv_gap(spread(s) + delta)``; the unknown ``delta`` is Z up to a per-row
    constant, and near a pole (``delta -> 0+``) keeps full relative precision. ``F(delta) = log sum_s pi(s)`` is
    strictly decreasing and convex (log (grad f)^-1 is convex for every barrier f in the table). Bracket:
    ``F <= 0`` at ``delta_hi = grad_gap(0)`` (every token's ratio <= 1); ``F >= 0`` at
    ``delta_lo = max_s [grad_gap(-log pi_ref(s)) - spread(s)]`` (that token alone has mass >= 1). Newton steps
    that leave the bracket fall back to bisection; with a pole they run on log(delta).
    """
    outside = torch.isneginf(reference) if _has_zeros(reference) else None
    log_ratio = experts - reference
    if outside is not None:
        log_ratio = log_ratio.masked_fill(outside, 0.0)  # excluded tokens get a harmless finite ratio
    arg = _weighted_sum(-div.grad_gap(log_ratio), w, outside, div)  # -inf exactly where pi(s) = 0
    top = arg.amax(dim=-1, keepdim=True)
    if bool(torch.isneginf(top).any()):
        _normalise(arg, div)  # raises: a row where every token has probability 0
    if bool(torch.isposinf(top).any()):
        raise WeightsError(f"divergence {div.name!r}: the weighted sum of gradients overflowed float64; use smaller "
                           "weights")
    spread = top - arg  # >= 0; +inf where pi(s) = 0
    if _has_zeros(-spread):
        reference = reference.masked_fill(torch.isposinf(spread), -torch.inf)

    last: list[Tensor] = []  # delta and log_x of the latest evaluation: warm start for iterative inverses

    def log_mass(delta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """F(delta), F'(delta), log pi(s; delta); exponents clamped at -700 (exp's denormal path is slow on CPU)."""
        if div.log_inv_gap_from is not None and last:  # log_x is convex in delta: its tangent is a lower bound
            start = last[1] - div.inv_slope(last[1]) * (delta - last[0])
            log_x = div.log_inv_gap_from(spread + delta, start)
        else:
            log_x = div.log_inv_gap(spread + delta)  # log (pi / pi_ref)
        last[:] = [delta, log_x]
        log_pi = reference + log_x
        peak = log_pi.amax(dim=-1, keepdim=True).clamp(min=-1e300, max=1e300)
        weight = torch.exp((log_pi - peak).clamp(min=-700))
        mass = weight.sum(dim=-1, keepdim=True)
        slope = (weight * div.inv_slope(log_x)).sum(dim=-1, keepdim=True)
        return peak + torch.log(mass), -slope / mass, log_pi

    # Newton runs on u = log(delta) when the inverse has a pole (delta > 0): F is then nearly linear in u next
    # to the pole, where it is logarithmic in delta and Newton in delta would crawl.
    log_space = math.isfinite(div.grad_hi)
    to_delta = torch.exp if log_space else (lambda u: u)
    hi = div.grad_gap(torch.zeros_like(top))
    lo = (div.grad_gap(-reference) - spread).amax(dim=-1, keepdim=True).clamp(max=hi)
    f_hi, d_hi, log_pi = log_mass(hi)
    f_lo, d_lo, log_pi_lo = log_mass(lo)
    if log_space:  # dF/du = delta dF/ddelta
        hi, lo, d_hi, d_lo = hi.log(), lo.log().clamp(min=_LOG_TINY), d_hi * hi, d_lo * lo
    log_pi = torch.where(f_hi.abs() <= f_lo.abs(), log_pi, log_pi_lo)
    f_new = torch.minimum(f_hi.abs(), f_lo.abs())
    for _ in range(_MAX_ITER):
        width = 4e-16 * (1 if log_space else torch.maximum(lo.abs(), hi.abs()))
        done = (f_new <= _NEWTON_TOL) | (hi - lo <= width)
        if bool(done.all()):
            break
        newton_lo = torch.where(torch.isfinite(f_lo), lo - f_lo / d_lo, -torch.inf)
        if log_space:  # from the better end
            newton = torch.where(f_lo.abs() < f_hi.abs(), newton_lo, hi - f_hi / d_hi)
        else:  # F is convex in delta: both ends' Newton steps fall short of the root, take the larger
            newton = torch.maximum(newton_lo, hi - f_hi / d_hi)
        step = torch.where((newton > lo) & (newton < hi), newton, (lo + hi) / 2)
        f_step, d_step, log_pi_step = log_mass(to_delta(step))
        if log_space:
            d_step = d_step * to_delta(step)
        update = ~done
        below = update & (f_step < 0)  # NaN/inf (beyond the pole) counts as too much mass
        above = update & ~(f_step < 0)
        hi, f_hi, d_hi = (torch.where(below, a, b) for a, b in ((step, hi), (f_step, f_hi), (d_step, d_hi)))
        lo, f_lo, d_lo = (torch.where(above, a, b) for a, b in ((step, lo), (f_step, f_lo), (d_step, d_lo)))
        log_pi = log_pi_step if bool(update.all()) else torch.where(update, log_pi_step, log_pi)
        f_new = torch.where(update, f_step.abs(), f_new)
    return _normalise(log_pi, div)
