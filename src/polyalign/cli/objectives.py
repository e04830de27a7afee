"""``polyalign objectives`` and ``polyalign score``: list objective kinds; score responses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def objectives_command() -> None:
    """List the objective kinds usable in --objective specs."""
    from rich.table import Table

    from polyalign.objectives import available, parameters

    table = Table(title="objectives: KIND[:ARG][,KEY=VALUE...]; every kind also takes name=, range=LOW..HIGH, clip=")
    for column in ("kind", "parameters", "description"):
        table.add_column(column)
    for kind, description in available().items():
        table.add_row(kind, ", ".join(parameters(kind)), description)
    Console().print(table)


def score_command(
    objective: Annotated[list[str], typer.Option("--objective", "-o", help="Objective spec, repeatable, e.g. "
                         "sentiment, length:target=30, hf:PATH,label=NAME (see `polyalign objectives`).")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: 'prompt', 'response', optional 'reference'.")],
    output: Annotated[Path | None, typer.Option("--output", help="Scores as .jsonl or .csv (default: stdout).")] = None,
    normalize: Annotated[Path | None, typer.Option("--normalize", help="Normalizer JSON saved by a run.")] = None,
    calibrate: Annotated[Path | None, typer.Option("--calibrate", help="JSONL of reference-policy responses: map "
                         "their 5th-95th percentiles of each objective to [0, 1].")] = None,
    save_normalizer: Annotated[Path | None, typer.Option("--save-normalizer", help="Save calibrated ranges here.")
                               ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=65536)] = 32,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Score responses under one or more objectives."""
    from rich.table import Table

    from polyalign.objectives.scoring import score_file

    objectives, scores = score_file(objective, input, output, normalize, calibrate, save_normalizer=save_normalizer,
                                    batch_size=batch_size, progress=progress)
    table = Table(title=f"{len(scores)} responses")
    for column in ("objective", "mean", "min", "max"):
        table.add_column(column, justify="left" if column == "objective" else "right")
    for name, column in zip(objectives.names, scores.T, strict=True):
        table.add_row(name, *(f"{value:.4g}" for value in (column.mean(), column.min(), column.max())))
    Console(stderr=True).print(table)
