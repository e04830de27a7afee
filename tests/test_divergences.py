"""The divergence table of DESIGN.md: inverses invert, gradients differentiate, flags and names behave."""

from __future__ import annotations

import math

import pytest
import torch

from polyalign import divergences
from polyalign.divergences import jeffrey_log_grad_inv
from polyalign.errors import DivergenceError, PolyalignError

BARRIER = ["reverse_kl", "forward_kl", "jsd", "alpha:0.2", "alpha:0.5", "alpha:0.9", "jeffrey"]
ALL = [*BARRIER, "total_variation", "chi_squared"]
F64 = torch.float64


def _x(lo: float = -6, hi: float = 6, n: int = 997) -> torch.Tensor:
    return torch.logspace(lo, hi, n, dtype=F64)


@pytest.mark.parametrize("name", [*BARRIER, "chi_squared"])
def test_grad_inv_inverts_grad_over_a_wide_range(name):
    div = divergences.get(name)
    x = _x(-8, 5) if name == "chi_squared" else _x(-10, 6)  # chi2: 2(x-1) loses x below ~1e-8 (no barrier)
    assert torch.allclose(div.grad_inv(div.grad(x)), x, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", BARRIER)
def test_gap_forms_invert_each_other_and_match_the_plain_forms(name):
    div = divergences.get(name)
    t = torch.linspace(-40, 40, 801, dtype=F64)  # ratios e^-40 .. e^40
    gap = div.grad_gap(t)
    assert torch.allclose(div.log_inv_gap(gap), t, rtol=1e-9, atol=1e-9)
    x = _x(-4, 4)
    assert torch.allclose(div.grad_gap(x.log()), div.edge - div.grad(x), rtol=1e-9, atol=1e-12)
    d = torch.logspace(-3, 1, 101, dtype=F64)
    assert torch.allclose(div.log_inv_gap(d), div.grad_inv(div.edge - d).log(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["forward_kl", "jsd", "alpha:0.5"])
def test_gap_form_keeps_precision_next_to_the_pole(name):
    div = divergences.get(name)
    d = torch.tensor([1e-30, 1e-200], dtype=F64)  # edge - d rounds to edge: the plain form would give inf
    log_x = div.log_inv_gap(d)
    assert torch.isfinite(log_x).all()
    assert torch.allclose(div.grad_gap(log_x), d, rtol=1e-12, atol=0)


def test_jeffrey_numerical_inverse_converges_to_1e_12():
    t = torch.linspace(-40, 40, 4001, dtype=F64)
    y = t + 1 - torch.exp(-t)
    assert (jeffrey_log_grad_inv(y) - t).abs().max() <= 1e-12 * (1 + t.abs()).max()
    x = _x(-10, 10)
    div = divergences.get("jeffrey")
    assert ((div.grad_inv(div.grad(x)) - x).abs() / x).max() <= 1e-12


def test_jeffrey_inverse_accepts_a_lower_bound_as_warm_start():
    t = torch.linspace(-30, 30, 601, dtype=F64)
    y = t + 1 - torch.exp(-t)
    for start in (t - 3, t - 1e-6, torch.full_like(t, -math.inf)):
        assert (jeffrey_log_grad_inv(y, start) - t).abs().max() <= 1e-12 * 31


def test_jeffrey_inverse_is_monotone_keeps_dtype_and_handles_infinities():
    y = torch.linspace(-1e6, 1e6, 10001, dtype=F64)
    t = jeffrey_log_grad_inv(y)
    assert (t.diff() > 0).all()
    y32 = torch.tensor([-math.inf, -3.0, 0.0, 2.0, math.inf], dtype=torch.float32)
    out = jeffrey_log_grad_inv(y32)
    assert out.dtype == torch.float32
    assert out[0] == -math.inf and out[-1] == math.inf and out[2] == 0
    assert jeffrey_log_grad_inv(torch.empty(0)).shape == (0,)
    assert jeffrey_log_grad_inv(torch.tensor([math.nan])).isnan().all()


@pytest.mark.parametrize("name", ALL)
def test_grad_is_the_derivative_of_f_and_f_is_convex_with_f1_zero(name):
    div = divergences.get(name)
    x = _x(-2, 2, 201)
    if name == "total_variation":
        x = x[(x - 1).abs() > 1e-3]  # kink at 1
    x = x.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(div.f(x).sum(), x)
    assert torch.allclose(autograd, div.grad(x.detach()), rtol=1e-10, atol=1e-12)
    assert div.f(torch.ones(1, dtype=F64)).abs().item() < 1e-15
    xs = _x(-2, 2, 50)
    one = torch.ones(1, dtype=F64)
    assert (div.f(xs) >= div.grad(one) * (xs - 1) - 1e-12).all()  # convex: above its tangent at 1
    assert (div.grad(xs).diff() >= 0).all()


@pytest.mark.parametrize("name", BARRIER)
def test_inv_slope_is_the_derivative_of_log_grad_inv(name):
    div = divergences.get(name)
    x = _x(-3, 3, 61)
    y, h = div.grad(x), 1e-6
    numeric = (div.grad_inv(y + h).log() - div.grad_inv(y - h).log()) / (2 * h)
    assert torch.allclose(div.inv_slope(x.log()), numeric, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_barrier_flags_and_gradient_range(name):
    div = divergences.get(name)
    at_zero = div.grad(torch.zeros(1, dtype=F64)).item()
    assert div.is_barrier == (name in BARRIER) == (at_zero == -math.inf)
    x = _x(-6, 6)
    g = div.grad(x)
    assert (g >= div.grad_lo).all() and (g <= div.grad_hi).all()
    if div.is_barrier:
        assert div.grad_lo == -math.inf
        beyond = torch.tensor([div.grad_hi + 1.0, -math.inf], dtype=F64)
        if math.isfinite(div.grad_hi):
            assert div.grad_inv(beyond)[0] == math.inf  # above the domain: the limit
        assert div.grad_inv(beyond)[1] == 0


def test_the_alpha_divergence_uses_the_convex_f_whose_gradient_is_in_the_table():
    div = divergences.get("alpha:0.3")
    x = torch.tensor([0.1, 0.5, 2.0, 10.0], dtype=F64)
    assert (div.f(x) > 0).all()
    assert torch.allclose(div.grad(x), (1 - x ** -0.3) / 0.3)


@pytest.mark.parametrize(("alias", "name"), [
    ("kl", "reverse_kl"), ("reverse-kl", "reverse_kl"), ("RKL", "reverse_kl"), ("fkl", "forward_kl"),
    ("Forward KL", "forward_kl"), ("js", "jsd"), ("tv", "total_variation"), ("chi2", "chi_squared"),
    ("jeffreys", "jeffrey"), ("alpha:0.5", "alpha:0.5"), ("alpha-0.3", "alpha:0.3"), ("Alpha=0.25", "alpha:0.25"),
])
def test_get_understands_aliases(alias, name):
    assert divergences.get(alias).name == name


def test_get_passes_divergences_through_and_available_lists_every_name():
    div = divergences.get("jsd")
    assert divergences.get(div) is div
    assert divergences.available() == ["reverse_kl", "forward_kl", "jsd", "alpha:<a>", "jeffrey", "total_variation",
                                       "chi_squared"]


def test_unknown_divergence_lists_the_valid_names():
    with pytest.raises(DivergenceError, match="unknown divergence 'hellinger'") as err:
        divergences.get("hellinger")
    assert "reverse_kl" in str(err.value) and "alpha:<a>" in str(err.value) and "chi2" in str(err.value)
    with pytest.raises(DivergenceError, match="unknown divergence"):
        divergences.get(3)


@pytest.mark.parametrize(("name", "message"), [
    ("alpha", "needs its parameter"), ("alpha:1.5", "strictly between 0 and 1, got 1.5"),
    ("alpha:0", "strictly between 0 and 1"), ("alpha-1", "strictly between 0 and 1"), ("alpha:x", "not a number"),
])
def test_alpha_outside_its_range_is_a_clear_error(name, message):
    with pytest.raises(DivergenceError, match=message):
        divergences.get(name)


@pytest.mark.parametrize("name", ["total_variation", "chi_squared"])
def test_require_barrier_rejects_non_barrier_divergences_with_the_reason(name):
    with pytest.raises(DivergenceError, match="Theorem 3") as err:
        divergences.require_barrier(divergences.get(name))
    assert "not a barrier" in str(err.value) and "arbitrarily sub-optimal" in str(err.value)
    assert isinstance(err.value, PolyalignError) and isinstance(err.value, ValueError)


def test_require_barrier_returns_barrier_divergences_and_tv_has_no_inverse():
    div = divergences.get("jeffrey")
    assert divergences.require_barrier(div) is div
    with pytest.raises(DivergenceError, match="no inverse"):
        divergences.get("tv").grad_inv(torch.zeros(1))
