"""The demo end to end on a tiny model: every file written, the table printed."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from polyalign import demo
from polyalign.cli import main
from polyalign.demo import OBJECTIVES, PROMPTS, WEIGHTINGS, run_demo
from polyalign.errors import FileError


def test_demo_writes_results_plot_and_report(tiny_models, tmp_path):
    out = io.StringIO()
    result = run_demo(tmp_path, model=str(tiny_models[1]), max_new_tokens=3, prompts=PROMPTS[:3], progress=False,
                      console=Console(file=out, width=200))
    assert [tuple(p.weights) for p in result.sweep.points] == [tuple(map(float, w)) for w in WEIGHTINGS]
    assert result.sweep.objectives == OBJECTIVES
    for kind in ("json", "pareto", "html"):
        assert result.files[kind].is_file() and result.files[kind].stat().st_size > 0
    assert result.files["pareto"].read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(result.files["json"].read_text())
    assert "MOD personas" in json.dumps(saved)
    printed = out.getvalue()
    assert "words" in printed and "sentiment" in printed and "Pareto plot" in printed
    # every point carries a KL estimate: the demo has a reference model
    assert all(p.kl is not None for p in result.sweep.points)


def test_demo_with_a_single_prompt_shows_its_response(tiny_models, tmp_path):
    out = io.StringIO()
    result = run_demo(tmp_path, model=str(tiny_models[1]), max_new_tokens=2, prompts=["Hi there"], progress=False,
                      console=Console(file=out, width=200))
    assert len(result.sweep.points[0].responses) == 1
    assert "example response" in out.getvalue()


def test_demo_cli(tiny_models, tmp_path, capsys):
    try:
        main(["demo", "--model", str(tiny_models[1]), "--max-new-tokens", "2", "--out", str(tmp_path),
              "--no-progress"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert list(tmp_path.glob("demo-*/results.json"))


def test_demo_checks_its_output_folder_before_loading(tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(demo.MOD, "from_personas", must_not_load)
    (tmp_path / "runs").write_text("a file where the folder should be")
    with pytest.raises(FileError, match="demo output folder \\(--out\\) .*runs' is a file, not a directory"):
        run_demo(tmp_path / "runs", progress=False)
    with pytest.raises(FileError, match="lies under .*runs', which is a file"):
        run_demo(tmp_path / "runs" / "sub", progress=False)
