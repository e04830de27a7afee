"""Score a JSONL file of responses under a set of objectives, optionally normalised: what ``polyalign score`` runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from polyalign.errors import ConfigError, ObjectiveError
from polyalign.files import check_output_file
from polyalign.objectives.base import ObjectiveSet, RowError
from polyalign.objectives.io import Rows, check_output, read_jsonl, write_scores
from polyalign.objectives.normalize import Normalizer
from polyalign.objectives.spec import build


def score_rows(objectives: ObjectiveSet, rows: Rows, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """``objectives.score`` over parsed rows; an error about a row names its line in the file."""
    try:
        return objectives.score(rows.prompts, rows.responses, rows.references, batch_size, progress)
    except RowError as exc:
        raise ObjectiveError(f"{exc} (input line {rows.lines[exc.row]})") from exc.__cause__


def score_file(
    specs: Sequence[str],
    input: str | Path,
    output: str | Path | None = None,
    normalizer: str | Path | None = None,
    calibrate: str | Path | None = None,
    percentiles: tuple[float, float] = (5.0, 95.0),
    save_normalizer: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[ObjectiveSet, torch.Tensor]:
    """Build ``specs``, optionally normalise (a saved normalizer, or ranges calibrated on the ``calibrate``
    JSONL of reference-policy responses), score ``input`` and write ``output`` (stdout JSONL when None)."""
    if normalizer is not None and calibrate is not None:
        raise ConfigError("give a saved normalizer or a calibration file, not both")
    if save_normalizer is not None and calibrate is None:
        raise ConfigError("saving a normalizer needs a calibration file of reference-policy responses")
    # Everything that can fail without scoring fails first: outputs, inputs, the saved normalizer, the specs.
    check_output(output)
    if save_normalizer is not None:
        check_output_file(save_normalizer, "normalizer file (--save-normalizer)")
    rows = read_jsonl(input)
    reference = read_jsonl(calibrate, "calibration file") if calibrate is not None else None
    saved = Normalizer.load(normalizer) if normalizer is not None else None
    objectives = build(list(specs))
    if reference is not None:
        fitted = Normalizer.calibrate(objectives, score_rows(objectives, reference, batch_size, progress),
                                      *percentiles)
        if save_normalizer is not None:
            fitted.save(save_normalizer)
        objectives = fitted.apply(objectives)
    elif saved is not None:
        objectives = saved.apply(objectives)
    scores = score_rows(objectives, rows, batch_size, progress)
    write_scores(output, rows, objectives.names, scores)
    return objectives, scores
