"""The ``polyalign`` command line: a thin typer adapter over the library.

Every :class:`~polyalign.errors.PolyalignError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from polyalign.cli_evaluate import evaluate
from polyalign.errors import PolyalignError

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


app.command()(evaluate)


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
