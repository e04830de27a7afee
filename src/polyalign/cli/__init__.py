"""The ``polyalign`` command line: a thin typer adapter over the library, one module per command.

Every user error (a :class:`~polyalign.errors.PolyalignError`, or a usage error of the command line itself)
becomes one ``error:`` line on stderr and exit code 2. ``--debug`` (or ``POLYALIGN_DEBUG=1``) shows the full
traceback instead, for bug reports.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer

from polyalign.cli.compare import compare
from polyalign.cli.demo import demo
from polyalign.cli.evaluate import evaluate
from polyalign.cli.generate import generate
from polyalign.cli.objectives import objectives_command, score_command
from polyalign.cli.serve import serve
from polyalign.cli.train import train
from polyalign.cli.train_expert import train_expert
from polyalign.errors import PolyalignError

app = typer.Typer(
    name="polyalign",
    help="Steer a language model across several objectives at inference time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (also POLYALIGN_DEBUG=1).")
          ) -> None:
    """Steer a language model across several objectives at inference time."""
    if debug:
        os.environ["POLYALIGN_DEBUG"] = "1"


app.command()(generate)
app.command()(evaluate)
app.command()(demo)
app.command("objectives")(objectives_command)
app.command("score")(score_command)
app.command()(train)
app.command("train-expert")(train_expert)
app.command()(compare)
app.command()(serve)


def _debugging(argv: list[str]) -> bool:
    return os.environ.get("POLYALIGN_DEBUG", "") not in ("", "0") or "--debug" in argv


def _usage_error(exc: BaseException) -> str | None:
    """The message of a command-line usage error, whichever click (vendored by typer, or not) raised it."""
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "polyalign"
        return f"{message} (see `{command} --help`)"
    return None


def _quiet_libraries() -> None:
    """Deprecation notices of torch/transformers/peft internals are not the user's to act on: keep stderr for
    polyalign's own lines (``--debug`` shows everything)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    if not _debugging(args):
        _quiet_libraries()
    try:
        code = app(args=args, standalone_mode=False)
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - every way out gets one line unless debugging
        if isinstance(exc, SystemExit):
            raise
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            sys.exit(130)
        if _debugging(args):
            traceback.print_exc()
        if isinstance(exc, PolyalignError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        usage = _usage_error(exc)
        if usage is not None:
            print(f"error: {usage}", file=sys.stderr)
            sys.exit(2)
        if not _debugging(args):
            print(f"error: internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  "(this is a bug: rerun with --debug and report the traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
