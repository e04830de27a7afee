"""PNG charts in the papers' styles, drawn with matplotlib's object API (Agg canvas, no pyplot state).

* :func:`pareto_plot`: every method's front on one chart per pair of objectives (CLP Figure 3).
* :func:`kl_reward_plot`: reward against KL to the reference, one panel per objective (CLP Figure 2).
* :func:`relative_value_plot`: ``1 - V(method)/V(baseline)`` per weighting as grouped bars (CLP Figure 4).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from polyalign.evaluation.results import EvaluationResult, SweepResult

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _groups(sweep: SweepResult):
    """(label suffix, points) per generation alpha, in sweep order."""
    alphas = list(dict.fromkeys(p.alpha for p in sweep.points))
    for alpha in alphas:
        suffix = "" if len(alphas) == 1 else f" (alpha={alpha})"
        yield suffix, [p for p in sweep.points if p.alpha == alpha]


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def pareto_plot(result: EvaluationResult, path: Path) -> Path:
    """Objective means with 95% bootstrap CIs, each method's weightings joined in grid order.

    Filled markers: grid weightings; hollow: held-out; star: a single-point method; grey x: the hypervolume
    reference point. Each point of a sweep is labelled with its weighting.
    """
    names = result.objectives
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    fig = Figure(figsize=(6.4 * len(pairs), 5.2))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for color, sweep in zip(itertools.cycle(COLORS), result.sweeps):
            for suffix, pts in _groups(sweep):
                x = np.array([p.mean[i] for p in pts])
                y = np.array([p.mean[j] for p in pts])
                xerr = np.array([[p.mean[i] - p.ci_low[i], p.ci_high[i] - p.mean[i]] for p in pts]).T
                yerr = np.array([[p.mean[j] - p.ci_low[j], p.ci_high[j] - p.mean[j]] for p in pts]).T
                marker = "*" if sweep.single_point else "o"
                grid = [k for k, p in enumerate(pts) if not p.held_out]
                held = [k for k, p in enumerate(pts) if p.held_out]
                ax.errorbar(x[grid], y[grid], xerr=xerr[:, grid], yerr=yerr[:, grid], color=color, marker=marker,
                            markersize=12 if sweep.single_point else 6, linestyle="-" if len(grid) > 1 else "none",
                            capsize=2, alpha=0.9, label=sweep.method + suffix)
                if not sweep.single_point:
                    for k, p in enumerate(pts):
                        ax.annotate(p.label, (x[k], y[k]), xytext=(4, 4), textcoords="offset points",
                                    fontsize=7, color=color, alpha=0.8)
                if held:
                    ax.errorbar(x[held], y[held], xerr=xerr[:, held], yerr=yerr[:, held], color=color, marker=marker,
                                markerfacecolor="white", linestyle="none", capsize=2,
                                label=f"{sweep.method}{suffix} held-out")
        ax.plot(result.reference_point[i], result.reference_point[j], "x", color="grey", label="HV reference")
        ax.set_xlabel(f"{names[i]} ({'higher' if result.higher_is_better[i] else 'lower'} is better)")
        ax.set_ylabel(f"{names[j]} ({'higher' if result.higher_is_better[j] else 'lower'} is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Pareto fronts (mean, 95% bootstrap CI)")
    return _save(fig, path)


def kl_reward_plot(result: EvaluationResult, path: Path) -> Path:
    """Mean reward of each objective against the mean KL to the reference, one line per method."""
    names = result.objectives
    fig = Figure(figsize=(5.2 * len(names), 4.4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    any_kl = any(p.kl is not None for s in result.sweeps for p in s.points)
    for i, ax in enumerate(axes):
        if not any_kl:
            _empty(ax, "no KL: no method returned reference log-probs")
            continue
        for color, sweep in zip(itertools.cycle(COLORS), result.sweeps):
            for suffix, pts in _groups(sweep):
                pts = sorted((p for p in pts if p.kl is not None), key=lambda p: p.kl)
                if pts:
                    ax.plot([p.kl for p in pts], [p.mean[i] for p in pts], marker="*" if sweep.single_point else "o",
                            color=color, label=sweep.method + suffix)
        ax.set_xlabel("KL(policy || reference), nats per response")
        ax.set_ylabel(names[i])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Reward against KL to the reference")
    return _save(fig, path)


def relative_value_plot(result: EvaluationResult, path: Path) -> Path:
    """Grouped bars of ``1 - V(method)/V(baseline)`` (CLP Figure 4); held-out weightings hatched."""
    rows = [r for r in result.relative_values if r.relative is not None]
    labels = list(dict.fromkeys(r.label for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.6))
    ax = fig.subplots()
    if not rows:
        _empty(ax, f"no ratios: needs a second method next to the baseline {result.baseline!r} and defined values")
        return _save(fig, path)
    width = 0.8 / len(methods)
    for k, (color, method) in enumerate(zip(itertools.cycle(COLORS), methods)):
        for r in rows:
            if r.method == method:
                ax.bar(labels.index(r.label) + (k - (len(methods) - 1) / 2) * width, r.relative, width, color=color,
                       hatch="//" if r.held_out else None, edgecolor="black", linewidth=0.4)
        ax.bar([], [], color=color, label=method)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"1 - V(method) / V({result.baseline})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("KL-regularised value relative to the baseline (hatched: held-out)")
    return _save(fig, path)
