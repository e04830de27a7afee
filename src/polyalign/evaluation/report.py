"""One self-contained HTML report: plots embedded as base64 PNG, tables, example responses; every text escaped."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from polyalign.evaluation.results import EvaluationResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.held td{background:#fff7e0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.resp{white-space:pre-wrap;background:#f9f9f9;padding:.4em;margin:.2em 0 .8em;border-left:3px solid #ccc}
"""


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return escape(str(x))


def _table(headers: list[str], rows: list[list], held: list[bool] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, int | float) or c is None
            else f"<td>{escape(str(c))}</td>"
            for c in row
        )
        cls = ' class="held"' if held and held[k] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(alt)}</figcaption></figure>")


def render_html(result: EvaluationResult, plots: dict[str, Path], examples: int = 3) -> str:
    """The report as one HTML string."""
    names = result.objectives
    directions = ", ".join(f"{n} ({'higher' if h else 'lower'} is better)"
                           for n, h in zip(names, result.higher_is_better, strict=True))
    methods = ", ".join(s.method for s in result.sweeps)
    parts = [f"<h1>polyalign evaluation</h1><p>Objectives: {escape(directions)}. Methods: {escape(methods)}. "
             f"Prompts per weighting: {len(result.sweeps[0].points[0].responses)}.</p>"]
    parts.append(f"<p>Hypervolume reference point: <b>{escape(str([round(x, 6) for x in result.reference_point]))}</b>"
                 f" ({escape(result.reference_point_source)}). Config hash <code>{escape(result.config_hash[:16])}"
                 "</code>. Rows shaded yellow are held-out weightings (no method trained on them).</p>")
    parts.append("<h2>Plots</h2>")
    for key, caption in (("pareto", "Pareto fronts (CLP Figure 3 style)"),
                         ("kl_reward", "Reward against KL (CLP Figure 2 style)"),
                         ("relative_value", "1 - V(method)/V(baseline) per weighting (CLP Figure 4 style)")):
        if key in plots:
            parts.append(_img(plots[key], caption))

    parts.append("<h2>Front indicators</h2><p>Hypervolume via moocore against the reference point above; coverage ="
                 " share of the hypervolume of all methods' points together; spearman = rank correlation of each "
                 "objective's mean with its own weight; spacing = Schott's spacing of the Pareto points.</p>")
    parts.append(_table(
        ["method", "alpha", "points", "hypervolume", "HV held-out", "coverage", "spacing", "Pareto points"]
        + [f"spearman {n}" for n in names] + [f"spread {n}" for n in names] + [f"calib. MAE {n}" for n in names],
        [[f.method, f.alpha, f.n_points, f.hypervolume, f.hypervolume_held_out, f.coverage, f.spacing,
          "; ".join(f.pareto_labels), *f.spearman, *f.spread, *(f.calibration_error or [None] * len(names))]
         for f in result.indicators],
    ))

    parts.append("<h2>Per weighting</h2><p>Mean [95% bootstrap CI] of each objective; KL is the mean single-sample "
                 "estimate sum_t log pi - log pi_ref; V = E[(1-alpha) R - alpha KL] (CLP Eq. 1) at value alpha.</p>")
    for sweep in result.sweeps:
        rows = [[p.label, "yes" if p.held_out else "", p.value_alpha,
                 *[f"{m:.4g} [{lo:.4g}, {hi:.4g}]" for m, lo, hi in zip(p.mean, p.ci_low, p.ci_high, strict=True)],
                 p.kl, *p.value, p.weighted_value] for p in sweep.points]
        parts.append(f"<h3>{escape(sweep.method)}{' (single point)' if sweep.single_point else ''}</h3>")
        parts.append(_table(["weighting", "held-out", "value alpha", *names, "KL", *[f"V {n}" for n in names], "V w.R"],
                            rows, [p.held_out for p in sweep.points]))
        if sweep.skipped:
            parts.append("<p>Skipped, outside this method's weight domain: " + "; ".join(
                f"{escape(label)} ({escape(reason)})" for label, reason in sweep.skipped.items()) + "</p>")

    parts.append(f"<h2>Relative value</h2><p>1 - V(method)/V({escape(str(result.baseline))}) with V of the "
                 "weighted reward w.R; with V(baseline) &gt; 0, negative means the method beats the baseline.</p>")
    rv = result.relative_values
    rv_rows = [[r.method, r.label, "yes" if r.held_out else "", r.value, r.baseline_value, r.relative] for r in rv]
    parts.append(_table(["method", "weighting", "held-out", "V(method)", "V(baseline)", "1 - ratio"], rv_rows,
                        [r.held_out for r in rv]) if rv else "<p>No other method next to the baseline.</p>")

    parts.append("<h2>Judge</h2>")
    if result.judge:
        parts.append(f"<p>Judge model: {escape(str(result.judge_model))}. Each pair asked in both orders; only "
                     "consistent verdicts count; rates are shares of the consistent ones.</p>")
        parts.append(_table(
            ["A", "B", "criterion", "weighting", "held-out", "win A", "tie", "win B", "consistent", "inconsistent"],
            [[j.method_a, j.method_b, j.criterion, j.label, "yes" if j.held_out else "", j.rate("wins"),
              j.rate("ties"), j.rate("losses"), j.consistent, j.inconsistent] for j in result.judge],
            [j.held_out for j in result.judge]))
    else:
        parts.append("<p>No judge configured.</p>")

    parts.append("<h2>Example responses</h2>")
    for sweep in result.sweeps:
        parts.append(f"<h3>{escape(sweep.method)}</h3>")
        for p in sweep.points:
            items = "".join(
                f"<p><b>Prompt {r.prompt_index}</b>: {escape(r.prompt)}<br>scores "
                f"{escape(', '.join(f'{n}={s:.4g}' for n, s in zip(names, r.scores, strict=True)))}"
                f"{'' if r.kl is None else f', KL={r.kl:.4g}'}</p><div class=\"resp\">{escape(r.text)}</div>"
                for r in p.responses[:examples]
            )
            parts.append(f"<details><summary>{escape(p.label)}{' (held-out)' if p.held_out else ''}</summary>"
                         f"{items}</details>")

    parts.append("<h2>Configuration</h2><pre>" + escape(json.dumps(result.config, indent=2)) + "</pre>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>polyalign evaluation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
