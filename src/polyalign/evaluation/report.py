"""One self-contained HTML report: plots embedded as base64 PNG, tables, example responses; every text escaped."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

import numpy as np

from polyalign.evaluation.plots import method_styles
from polyalign.evaluation.results import EvaluationResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em}
th{background:#f2f2f2}td{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.held td{background:#fff7e0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.scroll{overflow-x:auto}details{margin:.3em 0}summary{cursor:pointer}.note{color:#555;font-size:.9em}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;vertical-align:middle}
.resp{white-space:pre-wrap;background:#f9f9f9;padding:.4em;margin:.2em 0 .8em;border-left:3px solid #ccc}
"""


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return escape(str(x))


def _table(headers: list[str], rows: list[list], held: list[bool] | None = None,
           prefix: list[str] | None = None) -> str:
    """A table in a horizontally scrolling box; ``prefix``: raw HTML put into each row's first (text) cell."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, int | float) or c is None
            else f"<td>{prefix[k] if prefix and not n else ''}{escape(str(c))}</td>"
            for n, c in enumerate(row)
        )
        cls = ' class="held"' if held and held[k] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(alt)}</figcaption></figure>")


PLOTS = (("pareto", "Pareto fronts (CLP Figure 3 style)"),
         ("kl_reward", "Reward against KL (CLP Figure 2 style)"),
         ("relative_value", "1 - V(method)/V(baseline) per weighting (CLP Figure 4 style)"))


def _hash(result: EvaluationResult) -> str:
    if not result.config_hash:
        return ""
    what = "Config hash" if result.config else "Results hash (summarised without a config)"
    return f' {what} <code title="{escape(result.config_hash)}">{escape(result.config_hash[:16])}</code>.'


def _methods_table(result: EvaluationResult) -> str:
    """One row per method: kind, points, skipped weightings, mean KL, generation time per response."""
    kinds = {m.get("name"): m.get("kind") for m in result.config.get("methods", []) if isinstance(m, dict)}
    styles = method_styles(result)
    rows = []
    for s in result.sweeps:
        kls = [p.kl for p in s.points if p.kl is not None]
        n = sum(len(p.responses) for p in s.points)
        gen = s.timings.get("generation")
        rows.append([s.method, kinds.get(s.method) or "", "single point" if s.single_point else len(s.points),
                     len(s.skipped) or "", float(np.mean(kls)) if kls else None,
                     gen / n if gen is not None and n else None])
    swatches = [f'<span class="swatch" style="background:{styles[s.method]["color"]}"></span>' for s in result.sweeps]
    return _table(["method", "kind", "points", "skipped", "mean KL", "generate s / response"], rows,
                  prefix=swatches)


def render_html(result: EvaluationResult, plots: dict[str, Path], examples: int = 3) -> str:
    """The report as one HTML string; a plot, table or section with nothing to show is left out and named
    in the "Not shown" line."""
    names = result.objectives
    directions = ", ".join(f"{n} ({'higher' if h else 'lower'} is better)"
                           for n, h in zip(names, result.higher_is_better, strict=True))
    rv = result.relative_values
    not_shown = []
    if "kl_reward" not in plots:
        not_shown.append("reward against KL (no method returned reference log-probs)")
    if not rv:
        not_shown.append(f"relative value (no method next to the baseline {result.baseline!r})")
    elif "relative_value" not in plots:
        not_shown.append("relative value plot (no ratio is defined: V(baseline) is 0 or a value is missing)")
    if not result.judge:
        not_shown.append("judge (none configured)")
    parts = [f"<h1>polyalign evaluation</h1><p>Objectives: {escape(directions)}. Methods: {len(result.sweeps)}. "
             f"Prompts per weighting: {len(result.sweeps[0].points[0].responses)}.</p>"]
    parts.append(f"<p>Hypervolume reference point: <b>{escape(str([round(x, 6) for x in result.reference_point]))}</b>"
                 f" ({escape(result.reference_point_source)}).{_hash(result)} Rows shaded yellow are held-out "
                 "weightings (no method trained on them).</p>")
    if not_shown:
        parts.append("<p class=\"note\">Not shown, nothing to show: " + "; ".join(escape(x) for x in not_shown)
                     + ".</p>")
    parts.append("<h2>Methods</h2>" + _methods_table(result))
    drawn = [(key, caption) for key, caption in PLOTS if key in plots]
    if drawn:
        parts.append("<h2>Plots</h2>")
        parts.extend(_img(plots[key], caption) for key, caption in drawn)

    parts.append("<h2>Front indicators</h2><p>Hypervolume via moocore against the reference point above; coverage ="
                 " share of the hypervolume of all methods' points together; spearman = rank correlation of each "
                 "objective's mean with its own weight; spacing = Schott's spacing of the Pareto points.</p>")
    parts.append(_table(
        ["method", "alpha", "points", "hypervolume", "HV held-out", "coverage", "spacing", "Pareto points"]
        + [f"spearman {n}" for n in names] + [f"spread {n}" for n in names] + [f"calib. MAE {n}" for n in names],
        [[f.method, f.alpha, f.n_points, f.hypervolume, f.hypervolume_held_out, f.coverage, f.spacing,
          f"{len(f.pareto_labels)} of {f.n_points}", *f.spearman, *f.spread,
          *(f.calibration_error or [None] * len(names))]
         for f in result.indicators],
    ))
    parts.append("<details><summary>Pareto-optimal weightings of each method</summary><ul>" + "".join(
        f"<li><b>{escape(f.method)}</b>{'' if f.alpha is None else f' (alpha={f.alpha})'}: "
        f"{escape(', '.join(f.pareto_labels))}</li>" for f in result.indicators) + "</ul></details>")

    parts.append("<h2>Per weighting</h2><p>Mean [95% bootstrap CI] of each objective; KL is the mean single-sample "
                 "estimate sum_t log pi - log pi_ref; V = E[(1-alpha) R - alpha KL] (CLP Eq. 1) at value alpha.</p>")
    for sweep in result.sweeps:
        rows = [[p.label, "yes" if p.held_out else "", p.value_alpha,
                 *[f"{m:.4g} [{lo:.4g}, {hi:.4g}]" for m, lo, hi in zip(p.mean, p.ci_low, p.ci_high, strict=True)],
                 p.kl, *p.value, p.weighted_value] for p in sweep.points]
        count = "single point" if sweep.single_point else f"{len(sweep.points)} weightings"
        parts.append(f"<details{' open' if len(result.sweeps) <= 2 else ''}><summary><b>{escape(sweep.method)}"
                     f"</b> ({count})</summary>")
        parts.append(_table(["weighting", "held-out", "value alpha", *names, "KL", *[f"V {n}" for n in names], "V w.R"],
                            rows, [p.held_out for p in sweep.points]))
        if sweep.skipped:
            parts.append("<p>Skipped, outside this method's weight domain: " + "; ".join(
                f"{escape(label)} ({escape(reason)})" for label, reason in sweep.skipped.items()) + "</p>")
        parts.append("</details>")

    if rv:
        parts.append(f"<h2>Relative value</h2><p>1 - V(method)/V({escape(str(result.baseline))}) with V of the "
                     "weighted reward w.R; with V(baseline) &gt; 0, negative means the method beats the baseline.</p>")
        for method in dict.fromkeys(r.method for r in rv):
            mine = [r for r in rv if r.method == method]
            parts.append(f"<details><summary><b>{escape(method)}</b> against {escape(str(result.baseline))} "
                         f"({len(mine)} weightings)</summary>")
            parts.append(_table(["weighting", "held-out", "V(method)", "V(baseline)", "1 - ratio"],
                                [[r.label, "yes" if r.held_out else "", r.value, r.baseline_value, r.relative]
                                 for r in mine], [r.held_out for r in mine]))
            parts.append("</details>")

    if result.judge:
        parts.append("<h2>Judge</h2>")
        parts.append(f"<p>Judge model: {escape(str(result.judge_model))}. Each pair asked in both orders; only "
                     "consistent verdicts count; rates are shares of the consistent ones.</p>")
        parts.append(_table(
            ["A", "B", "criterion", "weighting", "held-out", "win A", "tie", "win B", "consistent", "inconsistent"],
            [[j.method_a, j.method_b, j.criterion, j.label, "yes" if j.held_out else "", j.rate("wins"),
              j.rate("ties"), j.rate("losses"), j.consistent, j.inconsistent] for j in result.judge],
            [j.held_out for j in result.judge]))

    parts.append("<h2>Example responses</h2>")
    for sweep in result.sweeps:
        parts.append(f"<details{' open' if len(result.sweeps) <= 2 else ''}><summary><b>{escape(sweep.method)}</b>"
                     f"</summary><div style=\"margin-left:1.2em\">")
        for p in sweep.points:
            items = "".join(
                f"<p><b>Prompt {r.prompt_index}</b>: {escape(r.prompt)}<br>scores "
                f"{escape(', '.join(f'{n}={s:.4g}' for n, s in zip(names, r.scores, strict=True)))}"
                f"{'' if r.kl is None else f', KL={r.kl:.4g}'}</p><div class=\"resp\">{escape(r.text)}</div>"
                for r in p.responses[:examples]
            )
            parts.append(f"<details><summary>{escape(p.label)}{' (held-out)' if p.held_out else ''}</summary>"
                         f"{items}</details>")
        parts.append("</div></details>")

    parts.append("<h2>Configuration</h2><pre>" + escape(json.dumps(result.config, indent=2)) + "</pre>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>polyalign evaluation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
