"""PNG charts in the papers' styles, drawn with matplotlib's object API (Agg canvas, no pyplot state).

* :func:`pareto_plot`: every method's front on one chart per pair of objectives (CLP Figure 3).
* :func:`kl_reward_plot`: reward against KL to the reference, one panel per objective (CLP Figure 2).
* :func:`relative_value_plot`: ``1 - V(method)/V(baseline)`` per weighting as grouped bars (CLP Figure 4).

Each method keeps one colour and one marker in every chart, and the legend sits outside the axes, so that
nine methods stay apart. A method's points are joined only along a weight line: sorted by their position
on the straight line through their weight vectors (never in grid order, never by KL). Single-point methods,
discrete-point methods (:data:`MARKERS_ONLY_KINDS`) and points that lie on no one line are drawn as markers
only. A chart with nothing to show is not drawn: its function returns None and removes a stale file.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from polyalign.evaluation.results import EvaluationResult, PointResult, SweepResult

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
          "#7f7f7f"]
"""matplotlib's tab10, reordered so that the first methods get the most distinct colours."""
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "*"]
LINESTYLES = ["-", "--", ":", "-."]
"""One per generation alpha of a method."""
MARKERS_ONLY_KINDS = frozenset({"morlhf"})
"""Method kinds whose points are separate models (one per fixed weighting): a line between them would claim
weightings in between that no model serves."""
PANELS_PER_ROW = 3
LABEL_LIMIT = 2
"""Weighting labels are written next to the points only when at most this many methods draw lines."""


def method_styles(result: EvaluationResult) -> dict[str, dict]:
    """Colour and marker of each method, by its position in the results: the same in every chart."""
    return {s.method: {"color": COLORS[k % len(COLORS)], "marker": MARKERS[k % len(MARKERS)]}
            for k, s in enumerate(result.sweeps)}


def markers_only(result: EvaluationResult, sweep: SweepResult) -> bool:
    """True for single-point methods and discrete-point kinds (the kind comes from the stored config)."""
    kinds = {m.get("name"): m.get("kind") for m in result.config.get("methods", []) if isinstance(m, dict)}
    return sweep.single_point or kinds.get(sweep.method) in MARKERS_ONLY_KINDS


def weight_line(points: Sequence[PointResult]) -> list[PointResult] | None:
    """``points`` sorted along the straight line through their weight vectors, in increasing order of the
    first weight (of the second, ... where the first is constant); None when they lie on no one line."""
    if len(points) < 2:
        return None
    w = np.asarray([p.weights for p in points], dtype=float)
    centred = w - w.mean(axis=0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    if sv[0] <= 1e-12 or (len(sv) > 1 and sv[1] > 1e-6 * sv[0]):
        return None
    direction = vt[0]
    lead = direction[np.flatnonzero(np.abs(direction) > 1e-9)[0]]
    t = centred @ direction * np.sign(lead)
    return [points[k] for k in np.argsort(t, kind="stable")]


def _groups(sweep: SweepResult):
    """(label suffix, line style, points) per generation alpha, in sweep order."""
    alphas = list(dict.fromkeys(p.alpha for p in sweep.points))
    for k, alpha in enumerate(alphas):
        suffix = "" if len(alphas) == 1 else f" (alpha={alpha})"
        yield suffix, LINESTYLES[k % len(LINESTYLES)], [p for p in sweep.points if p.alpha == alpha]


def _axes(fig: Figure, n: int) -> list:
    """``n`` panels, at most :data:`PANELS_PER_ROW` a row; the grid's unused cells are removed, not left empty."""
    cols = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.remove()
    return axes[:n]


def _draw(ax, pts: Sequence[PointResult], x, y, style: dict, linestyle: str, join: bool, single: bool,
          xerr=None, yerr=None) -> None:
    """One method's points: CIs (light), the weight line (if ``join`` and the points lie on one), markers
    (hollow where held out)."""
    if xerr is not None or yerr is not None:
        ax.errorbar([x(p) for p in pts], [y(p) for p in pts],
                    xerr=None if xerr is None else np.array([xerr(p) for p in pts]).T,
                    yerr=None if yerr is None else np.array([yerr(p) for p in pts]).T,
                    fmt="none", ecolor=style["color"], elinewidth=0.8, alpha=0.35, capsize=0, zorder=1)
    line = weight_line(pts) if join else None
    if line is not None:
        ax.plot([x(p) for p in line], [y(p) for p in line], color=style["color"], linestyle=linestyle,
                linewidth=1.5, alpha=0.85, zorder=2)
    size = 150 if single else 36
    for held in (False, True):
        sel = [p for p in pts if p.held_out == held]
        if sel:
            ax.scatter([x(p) for p in sel], [y(p) for p in sel], s=size, marker=style["marker"],
                       facecolors="white" if held else style["color"], edgecolors="black" if single else
                       style["color"], linewidths=1.0, zorder=3)


def _mean(i: int):
    return lambda p: p.mean[i]


def _ci(i: int):
    """The (below, above) lengths of objective ``i``'s CI bar."""
    return lambda p: (p.mean[i] - p.ci_low[i], p.ci_high[i] - p.mean[i])


def _handle(style: dict, label: str, linestyle: str | None, single: bool) -> Line2D:
    return Line2D([], [], color=style["color"], marker=style["marker"], linestyle=linestyle or "none",
                  markersize=11 if single else 6, markeredgecolor="black" if single else style["color"], label=label)


def _legend(fig: Figure, handles: list) -> None:
    """One legend for the whole figure, right of the panels (``bbox_inches='tight'`` keeps it in the PNG)."""
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=9, frameon=False,
               borderaxespad=0.0)


def _method_handles(result: EvaluationResult, sweeps: Sequence[SweepResult]) -> list:
    styles = method_styles(result)
    handles = []
    for sweep in sweeps:
        join = not markers_only(result, sweep)
        for suffix, linestyle, pts in _groups(sweep):
            kind = " (single point)" if sweep.single_point else "" if join else " (discrete points)"
            handles.append(_handle(styles[sweep.method], sweep.method + suffix + kind,
                                   linestyle if join and weight_line(pts) else None, sweep.single_point))
    if any(p.held_out for s in sweeps for p in s.points):
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="none",
                              label="hollow: held-out weighting"))
    return handles


def _save(fig: Figure | None, path: Path) -> Path | None:
    """Write ``fig`` to ``path``; with no figure, remove what an earlier draw left there."""
    if fig is None:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def pareto_figure(result: EvaluationResult) -> Figure:
    """Objective means with 95% bootstrap CIs; each method's weightings joined along their weight line.

    Hollow markers: held-out weightings; large black-edged markers: single-point methods; grey x: the
    hypervolume reference point.
    """
    names = result.objectives
    styles = method_styles(result)
    pairs = list(itertools.combinations(range(len(names)), 2)) or [(0, 0)]
    cols = min(len(pairs), PANELS_PER_ROW)
    size = (8.0, 6.4) if len(pairs) == 1 else (6.0, 5.0)
    fig = Figure(figsize=(size[0] * cols, size[1] * math.ceil(len(pairs) / cols)))
    axes = _axes(fig, len(pairs))
    labelled = sum(not markers_only(result, s) for s in result.sweeps) <= LABEL_LIMIT
    for ax, (i, j) in zip(axes, pairs, strict=True):
        for sweep in result.sweeps:
            join = not markers_only(result, sweep)
            for _, linestyle, pts in _groups(sweep):
                _draw(ax, pts, _mean(i), _mean(j), styles[sweep.method], linestyle, join, sweep.single_point,
                      _ci(i), _ci(j))
                if labelled and not sweep.single_point:
                    for p in pts:
                        ax.annotate(p.label, (p.mean[i], p.mean[j]), xytext=(4, 4), textcoords="offset points",
                                    fontsize=7, color=styles[sweep.method]["color"], alpha=0.8)
        ax.plot(result.reference_point[i], result.reference_point[j], "x", color="grey", markersize=8)
        ax.set_xlabel(f"{names[i]} ({'higher' if result.higher_is_better[i] else 'lower'} is better)")
        ax.set_ylabel(f"{names[j]} ({'higher' if result.higher_is_better[j] else 'lower'} is better)")
        ax.grid(alpha=0.3)
    handles = _method_handles(result, result.sweeps)
    handles.append(Line2D([], [], color="grey", marker="x", linestyle="none", label="hypervolume reference"))
    _legend(fig, handles)
    fig.suptitle(f"Pareto fronts (mean, 95% bootstrap CI); lines follow the weights, from low to high "
                 f"w_{names[0]}")
    return fig


def kl_reward_figure(result: EvaluationResult) -> Figure | None:
    """Mean reward of each objective against the mean KL to the reference, each method along its weight line;
    None when no method returned reference log-probs."""
    names = result.objectives
    styles = method_styles(result)
    with_kl = [s for s in result.sweeps if any(p.kl is not None for p in s.points)]
    if not with_kl:
        return None
    cols = min(len(names), PANELS_PER_ROW)
    fig = Figure(figsize=(5.2 * cols, 4.4 * math.ceil(len(names) / cols)))
    for i, ax in enumerate(_axes(fig, len(names))):
        for sweep in with_kl:
            join = not markers_only(result, sweep)
            for _, linestyle, pts in _groups(sweep):
                pts = [p for p in pts if p.kl is not None]
                _draw(ax, pts, lambda p: p.kl, _mean(i), styles[sweep.method], linestyle, join,
                      sweep.single_point, yerr=_ci(i))
        ax.set_xlabel("KL(policy || reference), nats per response")
        ax.set_ylabel(f"{names[i]} ({'higher' if result.higher_is_better[i] else 'lower'} is better)")
        ax.grid(alpha=0.3)
    handles = _method_handles(result, with_kl)
    without = [s.method for s in result.sweeps if s not in with_kl]
    if without:
        handles.append(Line2D([], [], linestyle="none", label="no KL (not drawn): " + ", ".join(without)))
    _legend(fig, handles)
    fig.suptitle(f"Reward against KL to the reference; lines follow the weights, from low to high w_{names[0]}")
    return fig


def relative_value_figure(result: EvaluationResult) -> Figure | None:
    """Grouped bars of ``1 - V(method)/V(baseline)`` (CLP Figure 4), held-out weightings hatched; None when
    no ratio is defined (one method, or undefined values)."""
    rows = [r for r in result.relative_values if r.relative is not None]
    if not rows:
        return None
    styles = method_styles(result)
    labels = list(dict.fromkeys(r.label for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    fig = Figure(figsize=(min(13.0, max(6.0, len(labels) * max(0.9, 0.16 * len(methods)) + 1.5)), 5.0))
    ax = fig.subplots()
    width = 0.84 / len(methods)
    for k, method in enumerate(methods):
        color = styles.get(method, {"color": COLORS[k % len(COLORS)]})["color"]
        mine = [r for r in rows if r.method == method]
        ax.bar([labels.index(r.label) + (k - (len(methods) - 1) / 2) * width for r in mine],
               [r.relative for r in mine], width, color=color, edgecolor="black", linewidth=0.4,
               hatch=[("//" if r.held_out else None) for r in mine], label=method)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(f"1 - V(method) / V({result.baseline})")
    ax.grid(axis="y", alpha=0.3)
    _legend(fig, ax.get_legend_handles_labels()[0])
    fig.suptitle(f"KL-regularised value relative to {result.baseline} (hatched: held-out)")
    return fig


def pareto_plot(result: EvaluationResult, path: Path) -> Path:
    """:func:`pareto_figure` as a PNG."""
    return _save(pareto_figure(result), path)


def kl_reward_plot(result: EvaluationResult, path: Path) -> Path | None:
    """:func:`kl_reward_figure` as a PNG; None (and no file) when no method has a KL."""
    return _save(kl_reward_figure(result), path)


def relative_value_plot(result: EvaluationResult, path: Path) -> Path | None:
    """:func:`relative_value_figure` as a PNG; None (and no file) when there is no ratio."""
    return _save(relative_value_figure(result), path)
