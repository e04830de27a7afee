"""The head-to-head comparison as one command: train every method on the same budget, then evaluate them all.

``polyalign compare --config configs/compare.yaml`` reads::

    output: runs/compare                 # each training run in OUTPUT/<name>, the evaluation in OUTPUT/evaluation
    train_defaults: {...}                # TrainConfig settings every run shares (model, objectives, prompts, ...)
    train:                               # one run per name: its own settings on top of the defaults
      experts:   {policy: {kind: experts}, steps: 32}
      clp-lora:  {steps: 32}
    evaluation: {...}                    # an EvalConfig whose methods name the runs' folders

Budgets are checked before anything trains: every run must generate the same number of sequences
(steps x batch_size x accumulation_steps x rloo_k), unless ``allow_unequal_budgets``. A finished run is not trained
again and an interrupted one resumes, so re-running the command after a crash continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from polyalign.errors import ConfigError
from polyalign.training.config import TrainConfig, parse_train_config


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: str
    train_defaults: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, dict[str, Any]] = Field(min_length=1)
    evaluation: dict[str, Any]
    allow_unequal_budgets: bool = False


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, section by section."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def budget(config: TrainConfig) -> int:
    """Sequences a run generates: what equal budgets hold equal."""
    k = config.rloo_k if config.estimator == "rloo" else 1
    return config.steps * config.batch_size * config.optim.accumulation_steps * k


def train_configs(config: CompareConfig) -> dict[str, TrainConfig]:
    """Every run's validated TrainConfig; unequal budgets refused (naming each run's)."""
    runs = {}
    for name, settings in config.train.items():
        data = merge(config.train_defaults, settings) | {"output": str(Path(config.output) / name)}
        runs[name] = parse_train_config(data, f"compare run {name!r}")
    budgets = {name: budget(run) for name, run in runs.items()}
    if len(set(budgets.values())) > 1 and not config.allow_unequal_budgets:
        raise ConfigError(f"the runs generate different numbers of sequences ({budgets}): give each the same "
                          "steps x batch_size (an experts run splits its steps between its experts), or set "
                          "allow_unequal_budgets: true")
    return runs


def load_compare_config(path: str | Path) -> CompareConfig:
    from pydantic import ValidationError

    from polyalign.files import read_yaml
    from polyalign.interface import config_error

    data = read_yaml(Path(path), "compare config")
    try:
        return CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, f"compare config {path}: ") from None


def run_compare(config: CompareConfig, *, progress: bool = True, echo=print) -> dict[str, Any]:
    """Train (or resume, or skip when finished) every run, then evaluate; returns the timings, also written to
    ``OUTPUT/compare.json``."""
    from polyalign.evaluation import evaluate
    from polyalign.evaluation.config import parse_config
    from polyalign.training import train
    from polyalign.training.run import CONFIG

    runs = train_configs(config)
    evaluation = parse_config(config.evaluation | {"output_dir": str(Path(config.output) / "evaluation")},
                              "compare evaluation")
    timings: dict[str, Any] = {"train_seconds": {}, "budget_sequences": {n: budget(r) for n, r in runs.items()}}
    for name, run in runs.items():
        echo(f"training {name} ({budget(run)} sequences) in {run.run_dir}")
        t0 = time.perf_counter()
        train(run, resume=(run.run_dir / CONFIG).is_file(), progress=progress)
        timings["train_seconds"][name] = round(time.perf_counter() - t0, 1)
    echo(f"evaluating {len(evaluation.methods)} methods in {evaluation.output_dir}")
    t0 = time.perf_counter()
    result, paths = evaluate(evaluation, progress=progress)
    timings["evaluate_seconds"] = round(time.perf_counter() - t0, 1)
    timings["paths"] = {k: str(v) for k, v in paths.items()}
    Path(config.output, "compare.json").write_text(json.dumps(timings, indent=2) + "\n")
    return timings | {"result": result}
