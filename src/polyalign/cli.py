"""The ``polyalign`` command line: a thin typer adapter over the library.

Every :class:`~polyalign.errors.PolyalignError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from polyalign.cli_evaluate import evaluate
from polyalign.cli_generate import generate
from polyalign.errors import PolyalignError
from polyalign.models import DEFAULT_MODEL

app = typer.Typer(
    name="polyalign",
    help="Steer a language model across several objectives at inference time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Steer a language model across several objectives at inference time."""


app.command()(generate)
app.command()(evaluate)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder under which the run folder is written.")] = Path("runs"),
    model: Annotated[str, typer.Option("--model", "-m", help="Model of the two persona experts.")] = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 48,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Steer the embedded model between a terse and a warm persona; print, save and plot the trade-off."""
    from polyalign.demo import run_demo

    run_demo(out, model, max_new_tokens, progress=progress)


@app.command("objectives")
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


@app.command("score")
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
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 32,
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
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    try:
        app(args=argv, standalone_mode=False)
    except PolyalignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own message
        import click

        if isinstance(exc, click.ClickException):
            print(f"error: {exc.format_message()}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
