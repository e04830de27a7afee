"""MOD's combination: bandit optimality for every barrier f, reverse-KL identities, properties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

import polyalign
from polyalign import combine, divergences
from polyalign.combine import combine_logits, combine_logprobs
from polyalign.errors import DivergenceError, PolyalignError, WeightsError

BARRIER = ["reverse_kl", "forward_kl", "jsd", "alpha:0.3", "alpha:0.7", "jeffrey"]
F64 = torch.float64


# --- an independent numpy/scipy reference: (grad f)^-1, the f-optimal policy, brute-force Z --------------------

def _np_grad_inv(name: str, y: np.ndarray) -> np.ndarray:
    """(grad f)^-1 by the table's closed forms; Jeffrey by brentq per element."""
    if name == "reverse_kl":
        return np.exp(y - 1)
    if name == "forward_kl":
        return -1 / y
    if name == "jsd":
        return np.exp(y) / (2 - np.exp(y))
    if name.startswith("alpha"):
        a = float(name.split(":")[1])
        return (1 - a * y) ** (-1 / a)
    assert name == "jeffrey"
    return np.array([math.exp(brentq(lambda t, v=v: t + 1 - math.exp(-t) - v, -50, abs(v) + 2, xtol=1e-15)) for v in y])


def _np_grad(name: str, x: np.ndarray) -> np.ndarray:
    return {"reverse_kl": lambda: np.log(x) + 1, "forward_kl": lambda: -1 / x, "jsd": lambda: np.log(2 * x / (1 + x)),
            "jeffrey": lambda: np.log(x) + 1 - 1 / x}.get(name, lambda: (1 - x ** -float(name[6:])) / float(name[6:]))()


def _grad_hi(name: str) -> float:
    return {"reverse_kl": math.inf, "forward_kl": 0.0, "jsd": math.log(2), "jeffrey": math.inf}.get(
        name, 1 / float(name[6:]) if name.startswith("alpha") else math.inf)


def _solve_z(name: str, pi_ref: np.ndarray, arg: np.ndarray) -> float:
    """Brute force: the Z with sum_s pi_ref(s) (grad f)^-1(arg(s) - Z) = 1."""
    def excess(z: float) -> float:
        return float((pi_ref * _np_grad_inv(name, arg - z)).sum() - 1)
    top, hi_edge = arg.max(), _grad_hi(name)
    lo = top - hi_edge + 1e-13 * max(1.0, abs(top)) if math.isfinite(hi_edge) else top - 80
    hi = top - _np_grad(name, np.ones(1))[0] + 1
    return brentq(excess, lo, hi, xtol=1e-15, rtol=1e-15)


def _f_optimal(name: str, pi_ref: np.ndarray, reward: np.ndarray, beta: float) -> np.ndarray:
    """argmax_pi E_pi[R] - beta D_f(pi || pi_ref) = pi_ref (grad f)^-1(R/beta - Z) (DESIGN.md)."""
    z = _solve_z(name, pi_ref, reward / beta)
    return pi_ref * _np_grad_inv(name, reward / beta - z)


def _to_log(p: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.log(p))


def _random_logprobs(gen: torch.Generator, *shape: int, scale: float = 2.0, dtype=F64) -> torch.Tensor:
    return torch.log_softmax(torch.randn(*shape, generator=gen, dtype=F64) * scale, dim=-1).to(dtype)


# --- the bandit: combining f-optimal experts gives the f-optimal policy for the weighted reward ------------------

BANDIT_WEIGHTS = [[0.7, 0.3], [0.4, 0.3], [1.5, -0.5], [5.0, -4.0], [0.2, 0.3, 0.5], [1.0, 0.8, -0.6], [0.5, 0.5, 0.5]]


@pytest.mark.parametrize("name", BARRIER)
@pytest.mark.parametrize("weights", BANDIT_WEIGHTS, ids=str)
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_bandit_combination_is_the_f_optimal_policy_for_the_weighted_reward(name, weights, beta):
    rng = np.random.default_rng(abs(hash((name, tuple(weights), beta))) % 2**32)
    n_tokens, w = 20, np.array(weights)
    pi_ref = rng.dirichlet(np.ones(n_tokens))
    rewards = rng.normal(size=(len(w), n_tokens))
    experts = np.stack([_f_optimal(name, pi_ref, r, beta) for r in rewards])
    target = _f_optimal(name, pi_ref, w @ rewards, beta)
    out = combine_logprobs(_to_log(pi_ref), _to_log(experts), weights, name)
    assert out.dtype == F64
    np.testing.assert_allclose(out.exp().numpy(), target, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.numpy(), np.log(target), atol=1e-5, rtol=0)  # small probabilities too


def test_bandit_batched_rows_with_their_own_weights():
    rng = np.random.default_rng(0)
    name, beta, weights = "jsd", 1.0, np.array([[0.6, 0.4], [2.0, -1.0], [0.1, 0.2]])
    refs = rng.dirichlet(np.ones(20), size=3)
    rewards = rng.normal(size=(3, 2, 20))  # [row, objective, token]
    experts = np.stack([[_f_optimal(name, refs[b], rewards[b, i], beta) for b in range(3)] for i in range(2)])
    target = np.stack([_f_optimal(name, refs[b], weights[b] @ rewards[b], beta) for b in range(3)])
    out = combine_logprobs(_to_log(refs), _to_log(experts), torch.from_numpy(weights), name)
    np.testing.assert_allclose(out.exp().numpy(), target, atol=1e-5)


# --- reverse KL -------------------------------------------------------------------------------------------

def test_reverse_kl_closed_form_equals_a_brute_force_root_of_the_general_formula():
    gen = torch.Generator().manual_seed(1)
    ref, experts, w = _random_logprobs(gen, 30), _random_logprobs(gen, 3, 30), [0.9, -0.4, 0.8]
    out = combine_logprobs(ref, experts, w, "reverse_kl")
    pi_ref, ratios = ref.exp().numpy(), (experts - ref).exp().numpy()
    arg = np.array(w) @ _np_grad("reverse_kl", ratios)
    brute = pi_ref * _np_grad_inv("reverse_kl", arg - _solve_z("reverse_kl", pi_ref, arg))
    np.testing.assert_allclose(out.exp().numpy(), brute, rtol=1e-9, atol=1e-14)
    # ... and equals the general Newton path run on reverse KL
    weights = combine._as_weights(w, experts)
    general = combine._solve(ref, experts, weights, divergences.get("reverse_kl"))
    torch.testing.assert_close(out, general, rtol=1e-9, atol=1e-9)


def test_reverse_kl_with_weights_summing_to_one_ignores_the_reference():
    gen = torch.Generator().manual_seed(2)
    experts, w = _random_logprobs(gen, 3, 4, 50), [0.5, 0.7, -0.2]
    ref_a, ref_b = _random_logprobs(gen, 4, 50), _random_logprobs(gen, 4, 50, scale=6)
    ref_b[:, :3] = -math.inf  # even the reference's zeros: its coefficient 1 - sum w is 0
    a = combine_logprobs(ref_a, experts, w)
    torch.testing.assert_close(a, combine_logprobs(ref_b, experts, w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, combine_logprobs(None, experts, w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, combine_logprobs(None, experts, [0.5, 0.7, -0.2 + 5e-7]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w", [0.3, 1.7, -0.5])
def test_reverse_kl_with_one_expert_is_dera(w):
    gen = torch.Generator().manual_seed(3)
    ref, expert = _random_logprobs(gen, 2, 40), _random_logprobs(gen, 1, 2, 40)
    dera = torch.log_softmax((1 - w) * ref + w * expert[0], dim=-1)
    torch.testing.assert_close(combine_logprobs(ref, expert, [w]), dera, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BARRIER)
@pytest.mark.parametrize("i", [0, 1, 2])
def test_a_unit_weight_vector_returns_that_expert(name, i):
    gen = torch.Generator().manual_seed(4)
    ref, experts = _random_logprobs(gen, 3, 64, scale=4), _random_logprobs(gen, 3, 3, 64, scale=4)
    w = [0.0, 0.0, 0.0]
    w[i] = 1.0
    torch.testing.assert_close(combine_logprobs(ref, experts, w, name), experts[i], rtol=1e-9, atol=1e-9)


def test_combine_logits_log_softmaxes_first_and_the_package_exports_the_api():
    gen = torch.Generator().manual_seed(5)
    ref, experts = torch.randn(2, 10, generator=gen), torch.randn(2, 2, 10, generator=gen)
    expected = combine_logprobs(ref.log_softmax(-1), experts.log_softmax(-1), [0.3, 0.9], divergences.get("js"))
    torch.testing.assert_close(combine_logits(ref, experts, [0.3, 0.9], "jsd"), expected)
    assert polyalign.combine_logprobs is combine_logprobs and "combine_logprobs" in polyalign.__all__
    assert polyalign.divergences.get("kl").name == "reverse_kl"


# --- zero probabilities and domain edges -------------------------------------------------------------------

@pytest.mark.parametrize("name", BARRIER)
def test_zero_probabilities_follow_the_conventions(name):
    gen = torch.Generator().manual_seed(6)
    ref, experts = _random_logprobs(gen, 2, 12), _random_logprobs(gen, 2, 2, 12)
    ref[:, 0] = -math.inf  # outside the reference's support
    experts[:, :, 1] = -math.inf  # padded slot: zero everywhere
    ref[:, 1] = -math.inf
    experts[0, :, 2] = -math.inf  # zero under a positively weighted expert
    out = combine_logprobs(ref, experts, [1.4, 0.3], name)
    assert (out[:, :3] == -math.inf).all()
    assert torch.isfinite(out[:, 3:]).all()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, dtype=F64))


def test_the_papers_safety_weights_work_with_padded_slots_and_zero_weights_ignore_zeros():
    gen = torch.Generator().manual_seed(11)
    experts = _random_logprobs(gen, 3, 2, 12)
    experts[:, :, -2:] = -math.inf  # padded vocabulary slots, zero under every model
    experts[2, :, 0] = -math.inf  # a zero under an expert whose weight is 0
    out = combine_logprobs(None, experts, [5.0, -4.0, 0.0])
    assert (out[..., -2:] == -math.inf).all() and torch.isfinite(out[..., :-2]).all()
    expected = torch.log_softmax(5 * experts[0, :, :-2] - 4 * experts[1, :, :-2], dim=-1)
    torch.testing.assert_close(out[..., :-2], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BARRIER)
def test_a_negative_weight_on_a_zero_probability_is_a_clear_error(name):
    gen = torch.Generator().manual_seed(7)
    ref, experts = _random_logprobs(gen, 12), _random_logprobs(gen, 2, 12)
    experts[1, 5] = -math.inf
    with pytest.raises(WeightsError, match="weight -4 of expert 1 is negative") as err:
        combine_logprobs(ref, experts, [5.0, -4.0], name)
    message = str(err.value)
    assert name in message and "token 5" in message and "undefined" in message and "non-negative" in message
    experts[0, 5] = -math.inf  # the positively weighted expert also excludes it: defined again
    out = combine_logprobs(ref, experts, [5.0, -4.0], name)
    assert out[5] == -math.inf and torch.isfinite(out[torch.arange(12) != 5]).all()


def _mp_combine(name: str, ref: torch.Tensor, experts: torch.Tensor, weights: list[float]) -> list[float]:
    """The MOD formula in 60-digit arithmetic (mpmath), Z by bisection: a brute force free of float64's limits."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    a = float(name[6:]) if name.startswith("alpha") else None
    grad = {"forward_kl": lambda x: -1 / x, "jsd": lambda x: mpmath.log(2 * x / (1 + x))}.get(
        name, lambda x: (1 - x ** -a) / a)
    inv = {"forward_kl": lambda y: -1 / y, "jsd": lambda y: mpmath.exp(y) / (2 - mpmath.exp(y))}.get(
        name, lambda y: (1 - a * y) ** (-1 / a))
    pi_ref = [mpmath.exp(mpmath.mpf(float(v))) for v in ref]
    arg = [sum(w * grad(mpmath.exp(mpmath.mpf(float(e[s]))) / pi_ref[s]) for w, e in zip(weights, experts, strict=True))
           for s in range(len(pi_ref))]
    edge = {"forward_kl": 0, "jsd": mpmath.log(2)}.get(name, 1 / mpmath.mpf(a) if a else 0)
    lo, hi = max(arg) - edge, max(arg) - grad(mpmath.mpf(1)) + 1
    for _ in range(400):
        mid = (lo + hi) / 2
        mass = sum(p * inv(g - mid) for p, g in zip(pi_ref, arg, strict=True))
        lo, hi = (mid, hi) if mass > 1 else (lo, mid)
    return [float(p * inv(g - hi)) for p, g in zip(pi_ref, arg, strict=True)]


@pytest.mark.parametrize("name", ["forward_kl", "jsd", "alpha:0.5"])
def test_tokens_far_beyond_the_reference_stay_accurate_next_to_the_pole(name):
    # Experts love a token the reference gives e^-60: the solved Z sits within ~e^-60 of the inverse's pole,
    # where Z itself cannot be written in float64 but its distance to the pole can.
    ref = torch.full((50,), -60.0, dtype=F64)
    ref[1:] = torch.log(-torch.expm1(torch.tensor(-60.0, dtype=F64)) / 49)
    expert = torch.full((50,), math.log(0.5 / 49), dtype=F64)
    expert[0] = math.log(0.5)
    experts, weights = torch.stack([expert, expert]), [0.9, 0.6]
    out = combine_logprobs(ref, experts, weights, name)
    brute = np.array(_mp_combine(name, ref, experts, weights))
    assert brute[0] > 1e-3  # really near the pole
    np.testing.assert_allclose(out.exp().numpy(), brute, rtol=1e-8)


def test_rows_with_no_common_support_are_an_error():
    ref, experts = torch.log(torch.tensor([0.5, 0.5, 0.0])), torch.log(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0, 0]]))
    for name in BARRIER:
        with pytest.raises(WeightsError, match="no token has nonzero probability"):
            combine_logprobs(ref, experts, [0.5, 0.25], name)


# --- properties ------------------------------------------------------------------------------------------

@st.composite
def problems(draw, masks: bool = False):
    seed = draw(st.integers(0, 2**31 - 1))
    n_experts, n_rows = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n_tokens = draw(st.integers(3 if masks else 2, 40))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0, 15.0]))
    weight = st.floats(-2, 3, allow_nan=False).filter(lambda x: abs(x) > 1e-3)
    weights = draw(st.lists(weight, min_size=n_experts, max_size=n_experts))
    gen = torch.Generator().manual_seed(seed)
    ref = _random_logprobs(gen, n_rows, n_tokens, scale=scale)
    experts = _random_logprobs(gen, n_experts, n_rows, n_tokens, scale=scale)
    if masks:  # zeros in the reference and padded slots; positive weights keep the result defined
        weights = [abs(x) for x in weights]
        ref[:, 0] = -math.inf
        experts[..., -1] = ref[..., -1] = -math.inf
    return ref, experts, weights, draw(st.sampled_from(BARRIER))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_property_rows_sum_to_one_and_are_finite(problem):
    ref, experts, weights, name = problem
    out = combine_logprobs(ref, experts, weights, name)
    assert out.shape == ref.shape and out.dtype == F64
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(ref.shape[0], dtype=F64), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems(masks=True))
def test_property_masked_tokens_get_zero_and_the_rest_sums_to_one(problem):
    ref, experts, weights, name = problem
    out = combine_logprobs(ref, experts, weights, name)
    reference_cancels = name == "reverse_kl" and abs(sum(weights) - 1) <= combine.SUM_TOL
    assert reference_cancels or (out[:, 0] == -math.inf).all()
    assert (out[:, -1] == -math.inf).all()
    assert not out.isnan().any()
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(ref.shape[0], dtype=F64), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_property_permuting_experts_with_their_weights_changes_nothing(problem, rnd):
    ref, experts, weights, name = problem
    order = list(range(len(weights)))
    rnd.shuffle(order)
    a = combine_logprobs(ref, experts, weights, name)
    b = combine_logprobs(ref, experts[order], [weights[i] for i in order], name)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(problems())
def test_property_batched_rows_equal_row_by_row(problem):
    ref, experts, weights, name = problem
    rows = torch.tensor(weights, dtype=F64).expand(ref.shape[0], -1) * torch.linspace(1, 1.5, ref.shape[0])[:, None]
    batched = combine_logprobs(ref, experts, rows, name)
    for b in range(ref.shape[0]):
        one = combine_logprobs(ref[b], experts[:, b], rows[b], name)
        torch.testing.assert_close(batched[b], one, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", BARRIER)
def test_per_prompt_weights_apply_to_every_position_of_that_prompt(name):
    gen = torch.Generator().manual_seed(10)
    ref, experts = _random_logprobs(gen, 2, 5, 16), _random_logprobs(gen, 2, 2, 5, 16)  # [B=2, T=5, V]
    weights = torch.tensor([[0.7, 0.3], [1.2, -0.4]], dtype=F64)  # [B, M]
    out = combine_logprobs(ref, experts, weights, name)
    for b in range(2):
        torch.testing.assert_close(out[b], combine_logprobs(ref[b], experts[:, b], weights[b], name))
    same = combine_logprobs(ref, experts, weights[:, None, :].expand(2, 5, 2), name)  # [B, T, M]
    torch.testing.assert_close(out, same)


def test_an_empty_batch_gives_an_empty_result():
    for name in BARRIER:
        assert combine_logprobs(torch.zeros(0, 5), torch.zeros(2, 0, 5), [0.5, 0.5], name).shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_output_keeps_the_input_dtype_and_device(dtype):
    gen = torch.Generator().manual_seed(8)
    ref, experts = _random_logprobs(gen, 2, 3, 16, dtype=dtype), _random_logprobs(gen, 2, 2, 3, 16, dtype=dtype)
    for name in BARRIER:
        out = combine_logprobs(ref, experts, torch.tensor([0.6, 0.4], dtype=torch.float32), name)
        assert out.dtype == dtype and out.device == ref.device and out.shape == ref.shape
        reference = combine_logprobs(ref.double(), experts.double(), [0.6, 0.4], name)
        atol = {torch.float32: 1e-6, torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]  # output rounding
        torch.testing.assert_close(out.double(), reference, rtol=0, atol=atol)


# --- bad input ---------------------------------------------------------------------------------------------

def _inputs():
    gen = torch.Generator().manual_seed(9)
    return _random_logprobs(gen, 2, 8), _random_logprobs(gen, 3, 2, 8)


@pytest.mark.parametrize(("weights", "message"), [
    ([0.5, 0.5], "got 2 weights .* for 3 experts: give one weight per expert"),
    (0.5, "got a scalar for 3 experts"),
    ([0.5, math.nan, 0.1], "must be finite numbers, got NaN or inf"),
    ([0.5, math.inf, 0.1], "must be finite numbers"),
    ([0.0, 0.0, 0.0], "all weights are zero"),
    ([[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]], r"all weights are zero \(in at least one row\)"),
    ([[0.2, 0.3, 0.5]] * 3, r"do not fit the batch \(2,\).*\[2, 3\] \(one weight vector per prompt\)"),
    ([[[0.2, 0.3, 0.5]]] * 2, r"do not fit the batch \(2,\)"),
    (["a", "b", "c"], "weights must be numbers, one per expert"),
])
def test_bad_weights_are_clear_errors(weights, message):
    ref, experts = _inputs()
    with pytest.raises(WeightsError, match=message):
        combine_logprobs(ref, experts, weights, "jsd")


def test_reference_none_is_only_allowed_where_it_cancels():
    _, experts = _inputs()
    with pytest.raises(WeightsError, match="reference=None works only for reverse_kl with weights summing to 1"):
        combine_logprobs(None, experts, [0.5, 0.2, 0.2])
    with pytest.raises(WeightsError, match="'forward_kl' needs the reference log-probs"):
        combine_logprobs(None, experts, [0.5, 0.3, 0.2], "forward_kl")


@pytest.mark.parametrize(("ref_shape", "experts_shape", "message"), [
    ((2, 9), (3, 2, 8), r"reference log-probs have shape \(2, 9\) but experts have \(3, 2, 8\)"),
    ((8,), (3, 2, 8), "the reference must be shaped like one expert, \\(2, 8\\)"),
    ((8,), (8,), r"experts must be a tensor of log-probs shaped \[M, ..., V\]"),
])
def test_shape_mismatches_are_clear_errors(ref_shape, experts_shape, message):
    ref = torch.log_softmax(torch.zeros(ref_shape), -1)
    experts = torch.log_softmax(torch.zeros(experts_shape), -1)
    with pytest.raises(PolyalignError, match=message):
        combine_logprobs(ref, experts, [1.0] * (experts_shape[0] if len(experts_shape) > 1 else 1))


def test_reference_and_experts_on_different_devices_is_a_clear_error():
    ref, experts = _inputs()
    with pytest.raises(PolyalignError, match="reference is on meta but experts on cpu: move both to one device"):
        combine_logprobs(ref.to("meta"), experts, [0.2, 0.3, 0.5])


def test_bad_log_probs_are_clear_errors():
    ref, experts = _inputs()
    bad = experts.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(PolyalignError, match="experts log-probs contain NaN or \\+inf"):
        combine_logprobs(ref, bad, [0.2, 0.3, 0.5])
    with pytest.raises(PolyalignError, match="reference log-probs contain NaN or \\+inf"):
        combine_logprobs(ref + math.inf, experts, [0.2, 0.3, 0.5])
    with pytest.raises(PolyalignError, match="floating-point"):
        combine_logprobs(None, torch.zeros(3, 2, 8, dtype=torch.long), [0.2, 0.3, 0.5])


@pytest.mark.parametrize("name", ["total_variation", "tv", "chi2"])
def test_non_barrier_divergences_are_rejected_with_the_theorem(name):
    ref, experts = _inputs()
    with pytest.raises(DivergenceError, match="Theorem 3"):
        combine_logprobs(ref, experts, [0.2, 0.3, 0.5], name)


def test_unknown_divergence_is_rejected_with_the_valid_names():
    ref, experts = _inputs()
    with pytest.raises(DivergenceError, match="unknown divergence 'kullback'.*reverse_kl, forward_kl, jsd"):
        combine_logprobs(ref, experts, [0.2, 0.3, 0.5], "kullback")


@pytest.mark.parametrize("name", BARRIER)
def test_logits_or_probabilities_passed_as_log_probs_are_refused(name):
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 3, 10, generator=gen, dtype=F64) * 3
    ref = torch.log_softmax(torch.randn(3, 10, generator=gen, dtype=F64), -1)
    for bad in (logits, logits.softmax(-1), logits - logits.amax(-1, keepdim=True)):
        with pytest.raises(PolyalignError, match="not log-probs"):
            combine_logprobs(ref, bad, [0.5, 0.5], name)
    masked = torch.log_softmax(logits, -1)
    masked[..., 0] = -math.inf  # masked without renormalising: a sub-distribution, combined as given
    assert torch.isfinite(combine_logprobs(ref, masked, [0.5, 0.5], name)[..., 1:]).all()
    fast = combine_logprobs(ref, torch.log_softmax(logits, -1), [0.5, 0.5], name, validate=False)
    torch.testing.assert_close(fast, combine_logprobs(ref, torch.log_softmax(logits, -1), [0.5, 0.5], name))


@pytest.mark.parametrize("name", BARRIER)
def test_weights_too_large_for_float64_say_so(name):
    gen = torch.Generator().manual_seed(13)
    ref, experts = _random_logprobs(gen, 2, 10), _random_logprobs(gen, 2, 2, 10)
    with pytest.raises(WeightsError, match="overflowed float64"):
        combine_logprobs(ref, experts, [1e308, -1e308], name)
