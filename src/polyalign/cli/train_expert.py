"""``polyalign train-expert``: a thin adapter over :func:`polyalign.training.fdpo_recipe.train_expert`.

An f-DPO expert from a preference file (``--preferences pairs.jsonl``) or from objectives (``--objective safety``:
pairs generated from the reference), as a LoRA adapter (default) or a whole model (``--full``), with the
divergence and beta it was trained under in its ``policy.json`` (MOD checks them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train_expert(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML expert config (optional).")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, KEY=VALUE with dotted keys (e.g. --set optim.lr=1e-4); repeatable.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder; the expert lands in "
                                                                      "OUTPUT/expert.")] = None,
    preferences: Annotated[str | None, typer.Option(
        "--preferences", "-p", help="Pairs: a .jsonl/.json/.csv file with prompt, chosen, rejected, or hf:DATASET.")
    ] = None,
    objective: Annotated[list[str] | None, typer.Option(
        "--objective", "-O", help="Generate pairs from this objective spec (repeatable: a weighted set).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="Weights of the --objective set, e.g. "
                                                                        "0.7,0.3.")] = None,
    prompts: Annotated[str | None, typer.Option(help="Prompts for generated pairs (default builtin:train).")] = None,
    prompt_limit: Annotated[int | None, typer.Option(min=1, help="Use the first N prompts.")] = None,
    k: Annotated[int | None, typer.Option("--k", min=2, help="Responses sampled per prompt (generated pairs).")
                 ] = None,
    name: Annotated[str | None, typer.Option(help="The expert's name (its objective in MOD).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Reference model the expert starts from.")
                     ] = None,
    divergence: Annotated[str | None, typer.Option(help="reverse_kl (DPO), forward_kl, jsd, alpha:A, jeffrey.")
                          ] = None,
    beta: Annotated[float | None, typer.Option(help="Strength of the divergence (default 0.1).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per batch.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Train the whole model instead of a LoRA adapter.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the output folder.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Train an f-DPO expert (Wang et al. 2023) for MOD from preference pairs or from objectives.

    Prints the expert's directory: decode it with polyalign generate --adapter NAME=DIR --divergence (the same).
    """
    import json

    from polyalign.errors import ConfigError
    from polyalign.training.fdpo_config import load_expert_config
    from polyalign.training.fdpo_recipe import train_expert as run_training
    from polyalign.weights import parse_weights

    extra = list(overrides or [])
    if preferences is not None and objective:
        raise ConfigError("give --preferences or --objective, not both")
    if objective:
        extra.append(f"generate.objectives={_yaml_list(objective)}")
    elif any(v is not None for v in (weights, prompts, prompt_limit, k)):
        raise ConfigError("--weights, --prompts, --prompt-limit and --k shape generated pairs: they need --objective")
    if weights is not None:
        extra.append(f"generate.weights={list(parse_weights(weights))}")
    for key, value in (("preferences", preferences), ("generate.prompts", prompts),
                       ("generate.prompt_limit", prompt_limit), ("generate.k", k), ("objective", name),
                       ("policy.model", model), ("divergence", divergence), ("beta", beta), ("steps", steps),
                       ("batch_size", batch_size), ("output", output)):
        if value is not None:
            extra.append(f"{key}={_yaml_scalar(value)}")
    if full:
        extra.append("policy.kind=full")
    cfg = load_expert_config(config, extra)
    expert = run_training(cfg, resume=resume, progress=progress)
    stats = json.loads((cfg.run_dir / "preferences.json").read_text())
    if stats.get("source") == "generated":
        typer.echo(f"pairs: {stats['pairs']} from {stats['prompts']} prompts ({stats['ties']} ties and "
                   f"{stats['identical']} identical responses dropped)", err=True)
    typer.echo(f"expert: {expert} (divergence {cfg.divergence}, beta {cfg.beta:g}; decode with "
               f"--adapter {cfg.expert_name}={expert} --divergence {cfg.divergence})"
               if cfg.policy.kind == "lora" else f"expert: {expert} (divergence {cfg.divergence}, beta {cfg.beta:g})")


def _yaml_scalar(value) -> str:
    import json

    return json.dumps(str(value)) if isinstance(value, str | Path) else str(value)


def _yaml_list(values: list[str]) -> str:
    import json

    return json.dumps(list(values))
