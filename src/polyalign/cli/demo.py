"""``polyalign demo``: persona MOD on the embedded model, swept, scored and plotted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polyalign.models import DEFAULT_MODEL


def demo(
    out: Annotated[Path, typer.Option(help="Folder under which the run folder is written.")] = Path("runs"),
    model: Annotated[str, typer.Option("--model", "-m", help="Model of the two persona experts.")] = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 48,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Steer the embedded model between a terse and a warm persona; print, save and plot the trade-off."""
    from polyalign.demo import run_demo

    run_demo(out, model, max_new_tokens, progress=progress)
