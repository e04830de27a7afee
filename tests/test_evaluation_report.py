"""The report with many methods: points along weight lines, no empty panels, the hash, one legend entry each."""

from __future__ import annotations

import numpy as np
import pytest

from polyalign.evaluation import evaluate, parse_config, run_sweep, simplex_grid, summarize, write_outputs
from polyalign.evaluation.grid import build_weightings
from polyalign.evaluation.plots import (
    COLORS,
    kl_reward_figure,
    method_styles,
    pareto_figure,
    relative_value_figure,
    weight_line,
)
from tests.eval_helpers import ToyObjectives, ToyPolicy

PROMPTS = ["a", "b", "c"]
NAMES = ["clp-lora", "clp-logit", "prompted", "soup", "mod", "dera", "morlhf", "experts", "untrained"]


def _grid():
    """A simplex line, an extrapolated weighting at each end and a held-out one: grid order is not line order."""
    return build_weightings(["pos", "long"], [*simplex_grid(2, 5), (1.5, -0.5), (-0.5, 1.5)], held_out=[(0.3, 0.7)])


def _sweep(name, weightings=None, single=False, kl=True):
    return run_sweep(ToyPolicy(kl=kl), PROMPTS, weightings or _grid(), ToyObjectives(), progress=False, name=name,
                     n_bootstrap=20, single_point=single)


def _many():
    """Nine methods as ``polyalign evaluate`` would store them (the kinds come from the config)."""
    from polyalign.evaluation.grid import Weighting

    sweeps = [_sweep(n) for n in NAMES[:6]]
    sweeps.append(_sweep("morlhf", [Weighting((0.0, 1.0)), Weighting((0.5, 0.5)), Weighting((1.0, 0.0))]))
    sweeps.append(_sweep("experts", [Weighting((0.0, 1.0)), Weighting((1.0, 0.0))]))
    sweeps.append(_sweep("untrained", [Weighting((0.5, 0.5))], single=True))
    result = summarize(sweeps, None, "soup")
    kinds = ["clp", "clp", "prompted", "soup", "mod", "dera", "morlhf", "morlhf", "model"]
    result.config = {"methods": [{"name": n, "kind": k} for n, k in zip(NAMES, kinds, strict=True)]}
    result.config_hash = "ab" * 32
    return result


def _lines(ax):
    """The data lines of a panel (markers are scatter collections; the HV reference is a one-point line)."""
    return [line for line in ax.lines if len(line.get_xdata()) > 1]


def test_weight_line_sorts_along_the_line_and_refuses_points_on_no_line():
    pts = _sweep("toy").points
    assert [p.label for p in weight_line(pts)] == [
        "w=(-0.5,1.5)", "w=(0,1)", "w=(0.25,0.75)", "w=(0.3,0.7)", "w=(0.5,0.5)", "w=(0.75,0.25)", "w=(1,0)",
        "w=(1.5,-0.5)"]
    three = run_sweep(ToyPolicy(objectives=("pos", "long", "x")), PROMPTS, simplex_grid(3, 3),
                      _Three(), progress=False, n_bootstrap=20).points
    assert weight_line(three) is None  # a simplex over 3 objectives is a triangle, not a line
    assert weight_line(three[:1]) is None


class _Three(ToyObjectives):
    names = ["pos", "long", "x"]
    higher_is_better = [True, True, True]

    def score(self, prompts, responses, references=None, batch_size=32, progress=False):
        import torch

        base = super().score(prompts, responses)
        return torch.cat([base, base[:, :1]], dim=1)


def test_kl_reward_lines_follow_the_weights_not_the_kl():
    # the toy's KL grows with |w_0 - 0.5| and its pos reward with w_0: sorted by KL (before) the line zig-zagged
    # between the two ends; along the weight line, pos rises monotonically
    result = summarize([_sweep("toy")])
    ax = kl_reward_figure(result).axes[0]
    (line,) = _lines(ax)
    pos = np.asarray(line.get_ydata())
    assert len(pos) == 8 and np.all(np.diff(pos) >= 0) and pos[-1] > pos[0]
    kl = np.asarray(line.get_xdata())
    assert kl.argmin() not in (0, len(kl) - 1)  # a V: low KL in the middle of the weight line


def test_pareto_lines_follow_the_weights_and_discrete_or_single_methods_are_markers_only():
    result = _many()
    fig = pareto_figure(result)
    (ax,) = fig.axes
    lines = _lines(ax)
    assert len(lines) == 6  # the six continuous methods; morlhf, experts and untrained have markers only
    for line in lines:
        assert np.all(np.diff(np.asarray(line.get_xdata())) >= 0)  # pos = w_0 rises along every line
    styles = method_styles(result)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 9
    assert len({s["color"] for s in styles.values()}) == min(9, len(COLORS))


@pytest.mark.parametrize("figure", [pareto_figure, kl_reward_figure])
def test_one_legend_outside_the_axes_names_every_method(figure):
    fig = figure(_many())
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    for name in NAMES:
        assert sum(t.split(" (")[0] == name for t in texts) == 1, (name, texts)
    assert all(ax.get_legend() is None for ax in fig.axes)  # none on top of the data


def test_relative_value_legend_names_every_method_but_the_baseline():
    fig = relative_value_figure(_many())
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [n for n in NAMES if n != "soup"]


def test_plots_with_nothing_to_show_are_left_out(tmp_path):
    (tmp_path / "relative_value.png").write_bytes(b"stale")
    (tmp_path / "kl_reward.png").write_bytes(b"stale")
    result = summarize([_sweep("alone", kl=False)])
    assert relative_value_figure(result) is None and kl_reward_figure(result) is None
    paths = write_outputs(result, tmp_path)
    assert set(paths) == {"json", "csv", "pareto", "html"}
    assert not (tmp_path / "relative_value.png").exists() and not (tmp_path / "kl_reward.png").exists()
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "no ratios" not in html and "<h2>Judge</h2>" not in html and "<h2>Relative value</h2>" not in html
    assert "Not shown, nothing to show" in html and "no method returned reference log-probs" in html


def test_no_empty_panels_with_more_objectives_than_a_row_holds():
    four = ["pos", "long", "x", "y"]

    class Four(ToyObjectives):
        names = four
        higher_is_better = [True] * 4

        def score(self, prompts, responses, references=None, batch_size=32, progress=False):
            import torch

            base = super().score(prompts, responses)
            return torch.cat([base, base], dim=1)

    sweep = run_sweep(ToyPolicy(objectives=four), PROMPTS, simplex_grid(4, 2), Four(), progress=False,
                      n_bootstrap=20)
    result = summarize([sweep])
    assert len(pareto_figure(result).axes) == 6  # 6 pairs in a 2 x 3 grid, every cell used
    assert len(kl_reward_figure(result).axes) == 4  # 4 objectives in a 2 x 3 grid: the 2 spare cells removed


def test_the_report_prints_the_hash(tmp_path):
    html = write_outputs(_sweep("toy"), tmp_path / "sweep")["html"].read_text()
    assert "Results hash" in html and "<code" in html
    assert "Config hash <code" not in html and "></code>" not in html

    config = parse_config({
        "objectives": ["pos", "long"],
        "methods": [{"name": "toy", "kind": "python", "factory": "tests.eval_helpers:make_toy"},
                    {"name": "plain", "kind": "python", "factory": "tests.eval_helpers:make_plain",
                     "single_point": True}],
        "prompts": PROMPTS, "weights": {"simplex": 3}, "n_bootstrap": 20, "output_dir": str(tmp_path / "run"),
    })
    _, paths = evaluate(config, objectives=ToyObjectives(), progress=False)
    html = paths["html"].read_text()
    assert f'Config hash <code title="{config.fingerprint()}">{config.fingerprint()[:16]}</code>' in html


def test_many_method_report_lists_every_method_once_per_section(tmp_path):
    html = write_outputs(_many(), tmp_path)["html"].read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "Config hash <code" in html and ("ab" * 8) in html
    for name in NAMES:
        assert f"<b>{name}</b>" in html
    assert html.count('class="swatch"') == 9
