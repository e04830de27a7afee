"""``polyalign evaluate``: a thin adapter over :func:`polyalign.evaluation.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def evaluate(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML evaluation config (methods, objectives, grid).")],
    output_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder; overrides output_dir.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace results of another config there.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
    allow_divergence_mismatch: Annotated[bool, typer.Option(
        "--allow-divergence-mismatch", help="MOD methods decode f-DPO experts trained under another divergence.")
    ] = False,
) -> None:
    """Sweep every method over the weight grid; write results JSON/CSV, plots and an HTML report.

    Re-running with the same config on a folder that holds its results only redraws the files.
    """
    from polyalign.evaluation import evaluate as run_evaluation
    from polyalign.evaluation import load_config

    cfg = load_config(config)
    if output_dir is not None:
        cfg = cfg.model_copy(update={"output_dir": output_dir})
    if allow_divergence_mismatch:
        methods = [type(m).model_validate(m.model_dump() | {"allow_divergence_mismatch": True}) if m.kind == "mod"
                   else m for m in cfg.methods]
        cfg = cfg.model_copy(update={"methods": methods})
    result, paths = run_evaluation(cfg, progress=progress, overwrite=overwrite)
    out = Console()
    table = Table(title=f"fronts (hypervolume reference {[round(x, 4) for x in result.reference_point]})")
    for column in ("method", "alpha", "points", "hypervolume", "coverage"):
        table.add_column(column)
    for name in result.objectives:
        table.add_column(f"spearman {name}")
    for f in result.indicators:
        table.add_row(f.method, str(f.alpha), str(f.n_points), f"{f.hypervolume:.4g}",
                      "–" if f.coverage is None else f"{f.coverage:.3f}",
                      *["–" if r is None else f"{r:.3f}" for r in f.spearman])
    out.print(table)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}")
