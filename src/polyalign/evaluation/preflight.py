"""Checks that an evaluation can finish, run before any model is loaded or any response generated.

Everything here is cheap (no model loads, no network): the output folder and its files, the prompts, the
method kinds, the reference point, the judge's pairs and model. :func:`polyalign.evaluation.evaluate` calls
:func:`check_before_run` first, so that a typo costs a second, not a sweep.
"""

from __future__ import annotations

from pathlib import Path

from polyalign.errors import ConfigError, PolyalignError
from polyalign.evaluation.config import EvalConfig
from polyalign.evaluation.outputs import OUTPUT_FILES
from polyalign.files import check_output_dir, check_output_file


def check_before_run(config: EvalConfig, *, check_judge_model: bool = True) -> None:
    """Raise the error a run of ``config`` would raise only after its work, now.

    ``check_judge_model=False`` skips locating the configured judge (for callers that pass their own judge).
    """
    run_dir = check_output_dir(Path(config.output_dir), "evaluation output folder (output_dir, or -o)")
    for name in OUTPUT_FILES:
        check_output_file(run_dir / name, "evaluation output file")
    config.load_prompts()
    _check_methods(config)
    m = len(config.objectives)
    if config.reference_point is not None and len(config.reference_point) != m:  # configs built without validation
        raise ConfigError(f"reference_point has {len(config.reference_point)} values but there are {m} objectives "
                          f"{config.objectives}; give one value per objective")
    if config.judge is not None:
        names = [mc.name for mc in config.methods]
        if not config.judge.pairs and len(names) < 2:
            raise ConfigError("the judge needs two methods: add a method or list judge pairs")
        if check_judge_model:
            from polyalign.models import check_spec

            check_spec(config.judge.model)


def _check_methods(config: EvalConfig) -> None:
    """Every method's policy config is complete and valid, and the trained checkpoints it names exist and are of
    its kind (typed, only ``policy.json`` files read, no model loaded): a bad fifth method fails before the first
    one runs."""
    from polyalign.policies.config import parse_policy

    for mc in config.methods:
        policy = parse_policy({"kind": mc.kind, **mc.params}, f"method {mc.name!r}")
        try:
            getattr(policy, "check_checkpoints", lambda: None)()
        except PolyalignError as exc:
            raise type(exc)(f"method {mc.name!r}: {exc}") from None
