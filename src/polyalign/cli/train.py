"""``polyalign train``: a thin adapter over :func:`polyalign.training.train`.

Several processes or GPUs: ``accelerate launch --num_processes N -m polyalign.cli train --config run.yaml``
(FSDP and DeepSpeed come from accelerate's own config file: ``accelerate launch --config_file fsdp.yaml ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML training config (see polyalign.training).")],
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, KEY=VALUE with dotted keys (e.g. --set optim.lr=1e-4); repeatable.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder; overrides output.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimizer steps; overrides steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output folder from its newest "
                                                          "checkpoint.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Train a conditioned language policy (CLP) by multi-task RL over sampled weightings (CLP Algorithm 1).

    Writes metrics.jsonl and checkpoints to the run folder; polyalign.load(CHECKPOINT) gives the policy back.
    """
    from polyalign.training import load_train_config
    from polyalign.training import train as run_training

    extra = list(overrides or [])
    if output is not None:
        extra.append(f"output={output}")
    if steps is not None:
        extra.append(f"steps={steps}")
    cfg = load_train_config(config, extra)
    final = run_training(cfg, resume=resume, progress=progress)
    typer.echo(f"checkpoint: {final}")
