"""Pareto filtering and hypervolume against brute force; steerability metrics on fronts with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyalign.errors import ConfigError, WeightsError
from polyalign.evaluation import indicators as ind
from polyalign.evaluation.grid import build_weightings, line_grid, simplex_grid


def brute_pareto(points: np.ndarray) -> np.ndarray:
    keep = []
    for i, p in enumerate(points):
        dominated = any(all(q >= p) and any(q > p) for j, q in enumerate(points) if j != i)
        keep.append(not dominated)
    return np.array(keep, dtype=bool)


def brute_hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact: split space on every coordinate, sum the cells that some point dominates (maximisation)."""
    pts = points[(points > ref).all(axis=1)]
    if len(pts) == 0:
        return 0.0
    axes = [np.unique(np.concatenate([[ref[d]], pts[:, d]])) for d in range(points.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        upper = np.array([axes[d][c + 1] for d, c in enumerate(cell)])
        if (pts >= upper).all(axis=1).any():
            total += float(np.prod([axes[d][c + 1] - axes[d][c] for d, c in enumerate(cell)]))
    return total


points_strategy = st.integers(2, 3).flatmap(
    lambda m: st.lists(st.lists(st.integers(0, 6).map(float), min_size=m, max_size=m), min_size=1, max_size=12)
)


@settings(max_examples=200, deadline=None)
@given(points_strategy)
def test_pareto_mask_matches_brute_force(points):
    p = np.array(points)
    assert (ind.pareto_mask(p) == brute_pareto(p)).all()
    # minimising is maximising the negation
    assert (ind.pareto_mask(p, [False] * p.shape[1]) == brute_pareto(-p)).all()


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_brute_force_on_random_fronts(m):
    rng = np.random.default_rng(m)
    for _ in range(30):
        pts = rng.uniform(0, 1, size=(rng.integers(1, 9), m))
        ref = rng.uniform(-0.2, 0.3, size=m)
        assert ind.hypervolume(pts, ref) == pytest.approx(brute_hypervolume(pts, ref), abs=1e-12)
        # a lower-is-better objective: flip its sign and its flag, same volume
        flags = [True] * (m - 1) + [False]
        flipped, ref_flipped = pts.copy(), ref.copy()
        flipped[:, -1] *= -1
        ref_flipped[-1] *= -1
        assert ind.hypervolume(flipped, ref_flipped, flags) == pytest.approx(brute_hypervolume(pts, ref), abs=1e-12)


def test_hypervolume_known_values():
    assert ind.hypervolume([[1.0, 1.0]], [0.0, 0.0]) == pytest.approx(1.0)
    assert ind.hypervolume([[2.0, 1.0], [1.0, 2.0]], [0.0, 0.0]) == pytest.approx(3.0)
    assert ind.hypervolume([[-1.0, 5.0]], [0.0, 0.0]) == 0.0  # outside the reference box counts nothing
    with pytest.raises(ConfigError, match="coordinates"):
        ind.hypervolume([[1.0, 1.0]], [0.0])


def test_default_reference_is_worst_minus_margin():
    pts = [[0.0, 10.0], [1.0, 0.0]]
    assert ind.default_reference(pts) == pytest.approx([-0.1, -1.0])
    assert ind.default_reference(pts, [True, False]) == pytest.approx([-0.1, 11.0])


def test_steerability_known_answers():
    w = np.array([[t, 1 - t] for t in np.linspace(0, 1, 6)])
    steerable = np.column_stack([w[:, 0] ** 3, 1 - w[:, 0]])  # monotone in its own weight
    rho = ind.steerability(w, steerable)
    assert rho[0][0] == pytest.approx(1.0) and rho[1][0] == pytest.approx(1.0)
    backwards = np.column_stack([-w[:, 0], w[:, 0]])
    assert [r for r, _ in ind.steerability(w, backwards)] == pytest.approx([-1.0, -1.0])
    flat = np.column_stack([np.ones(6), w[:, 1]])
    assert ind.steerability(w, flat)[0] == (None, None)
    assert ind.steerability(w[:1], steerable[:1]) == [(None, None), (None, None)]


def test_spread_spacing_coverage_calibration():
    front = np.array([[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    assert ind.spread(front) == pytest.approx([1.0, 1.0])
    assert ind.spacing(front) == pytest.approx(0.0)  # evenly spaced
    uneven = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0]])
    assert ind.spacing(uneven) > 0.3
    ref = [0.0, 0.0]
    assert ind.coverage(front, front, ref) == pytest.approx(1.0)
    single = np.array([[0.5, 0.5]])
    assert ind.coverage(single, front, ref) == pytest.approx(0.25 / ind.hypervolume(front, ref))
    achieved = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert ind.calibration_error(achieved, [[1.5, np.nan], [2.0, np.nan]]) == [pytest.approx(0.75), None]


def test_kl_regularised_value_and_relative_value():
    r, kl = [1.0, 3.0], [0.5, 1.5]
    assert ind.kl_regularised_value(r, kl, 0.25) == pytest.approx(0.75 * 2.0 - 0.25 * 1.0)
    assert ind.kl_regularised_value(r, None, 0.0) == pytest.approx(2.0)
    assert ind.kl_regularised_value(r, None, 0.1) is None
    assert ind.relative_value(0.8, 1.0) == pytest.approx(0.2)
    assert ind.relative_value(1.0, 0.0) is None


def test_grids():
    g2 = simplex_grid(2, 11)
    assert len(g2) == 11 and g2[0] == (0.0, 1.0) and g2[-1] == (1.0, 0.0)
    g3 = simplex_grid(3, 5)
    assert len(g3) == 15 and all(sum(w) == pytest.approx(1.0) for w in g3) and len(set(g3)) == 15
    line = line_grid((-4, 5), (5, -4), 10)
    assert line[0] == (-4.0, 5.0) and line[-1] == (5.0, -4.0) and (0.0, 1.0) in line
    ws = build_weightings(["a", "b"], [(0.5, 0.5), (1, 0)], alphas=[0.1, 0.5], held_out=[(0.3, 0.7)])
    assert len(ws) == 6 and [w.held_out for w in ws] == [False] * 4 + [True] * 2
    assert ws[0].label == "w=(0.5,0.5) a=0.1"


def test_grid_errors():
    with pytest.raises(WeightsError, match="expected 3 weights, one per objective"):
        build_weightings(["a", "b", "c"], [(0.5, 0.5)])
    with pytest.raises(ConfigError, match="empty"):
        build_weightings(["a", "b"], [])
    with pytest.raises(WeightsError, match="all weights are zero"):
        build_weightings(["a", "b"], [(0, 0)])
    with pytest.raises(ConfigError, match="held out"):
        build_weightings(["a", "b"], [(0.5, 0.5)], held_out=[(0.5, 0.5)])
    with pytest.raises(WeightsError, match="alpha"):
        build_weightings(["a", "b"], [(0.5, 0.5)], alphas=[1.5])
    with pytest.raises(WeightsError):
        simplex_grid(3, 1)
