"""``polyalign compare``: a thin adapter over :func:`polyalign.compare.run_compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def compare(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML comparison config (runs + evaluation).")],
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Train every method on the same budget, then evaluate them all on one grid (finished runs are skipped,
    interrupted ones resume)."""
    from rich.console import Console
    from rich.table import Table

    from polyalign.compare import load_compare_config, run_compare

    out = Console()
    done = run_compare(load_compare_config(config), progress=progress, echo=out.print)
    result = done["result"]
    table = Table(title="comparison")
    for column in ("method", "alpha", "points", "hypervolume", *[f"spearman {n}" for n in result.objectives]):
        table.add_column(column)
    for f in result.indicators:
        table.add_row(f.method, str(f.alpha), str(f.n_points), f"{f.hypervolume:.4g}",
                      *["–" if r is None else f"{r:.3f}" for r in f.spearman])
    out.print(table)
    out.print(f"training seconds: {done['train_seconds']}; evaluation: {done['evaluate_seconds']} s")
    for kind, path in done["paths"].items():
        out.print(f"{kind}: {path}")
