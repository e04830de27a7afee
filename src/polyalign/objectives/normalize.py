"""Normalisation: map each objective linearly from a range ``[low, high]`` to ``[0, 1]``.

The range is either fixed (as the CLP paper does, e.g. NLI (-7, 0) and ROUGE (19, 29)) or calibrated from
percentiles of scores on reference-policy responses (default 5th to 95th). A :class:`Normalizer` saves to
JSON with a run, together with each objective's spec, so later scores stay on the same scale. Applied to
a set it wraps each objective in :class:`Normalized`, whose spec carries ``range=LOW..HIGH``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from polyalign.errors import ConfigError, FileError, ObjectiveError
from polyalign.files import read_json, write_text
from polyalign.objectives.base import Objective, ObjectiveSet, check_scores

FORMAT = "polyalign.normalizer/1"


@dataclass(frozen=True)
class LinearRange:
    """``(score - low) / (high - low)``: low maps to 0, high to 1; ``low > high`` flips the direction."""

    low: float
    high: float
    clip: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"normalisation range {self.low}..{self.high} must be finite")
        if self.low == self.high:
            raise ConfigError(f"normalisation range {self.low}..{self.high} has zero width; give LOW != HIGH")

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """Map linearly to [0, 1] (values outside the range land outside [0, 1] unless ``clip``)."""
        mapped = (scores - self.low) / (self.high - self.low)
        return mapped.clamp(0.0, 1.0) if self.clip else mapped

    def to_text(self) -> str:
        return f"{self.low!r}..{self.high!r}"

    @classmethod
    def parse(cls, text: str, clip: bool = False) -> LinearRange:
        """Parse ``LOW..HIGH``, e.g. ``-1..1`` or ``19..29``."""
        low, sep, high = text.partition("..")
        try:
            if not sep:
                raise ValueError
            bounds = float(low), float(high)
        except ValueError:
            raise ConfigError(f"range {text!r} is not LOW..HIGH with two numbers, e.g. range=-1..1") from None
        return cls(*bounds, clip)


def percentile_range(scores: torch.Tensor, lower: float = 5.0, upper: float = 95.0) -> tuple[float, float]:
    """The ``lower``-th and ``upper``-th percentiles (linear interpolation) of one objective's scores."""
    if not 0.0 <= lower < upper <= 100.0:
        raise ConfigError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower} and {upper}")
    q = torch.tensor([lower / 100.0, upper / 100.0], dtype=torch.float64)
    low, high = torch.quantile(scores.to(torch.float64), q).tolist()
    return low, high


class Normalized:
    """Wraps an objective: its scores mapped through a :class:`LinearRange`."""

    def __init__(self, objective: Objective, scale: LinearRange):
        if isinstance(objective, Normalized):
            raise ConfigError(f"objective {objective.name!r} is already normalised ({objective.scale.to_text()})")
        self.objective, self.scale = objective, scale
        self.name = objective.name
        self.higher_is_better = objective.higher_is_better == (scale.low < scale.high)
        inner = getattr(objective, "spec", None)
        if inner is not None:
            from polyalign.objectives.spec import add_params

            extra = {"range": scale.to_text(), **({"clip": "true"} if scale.clip else {})}
            self.spec = add_params(inner, extra)

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        raw = check_scores(self.name, self.objective.score(prompts, responses, references), len(responses))
        return self.scale.apply(raw)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    spec: str | None = None
    low: float
    high: float
    clip: bool = False
    source: str = "fixed"


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    objectives: list[_Entry]


@dataclass
class Normalizer:
    """Per-objective linear ranges, keyed by name; ``specs`` record which objective each was made for."""

    ranges: dict[str, LinearRange]
    specs: dict[str, str | None]
    sources: dict[str, str]

    @classmethod
    def fixed(cls, ranges: Mapping[str, tuple[float, float]], clip: bool = False) -> Normalizer:
        """Fixed ranges, e.g. ``{"nli": (-7, 0), "rouge": (0.19, 0.29)}`` as in the CLP paper."""
        scales = {name: LinearRange(float(lo), float(hi), clip) for name, (lo, hi) in ranges.items()}
        return cls(scales, dict.fromkeys(scales), dict.fromkeys(scales, "fixed"))

    @classmethod
    def calibrate(
        cls, objectives: ObjectiveSet, scores: torch.Tensor, lower: float = 5.0, upper: float = 95.0,
        clip: bool = False,
    ) -> Normalizer:
        """Ranges from percentiles of ``scores`` (``[N, M]`` from ``objectives.score`` on reference responses)."""
        if scores.ndim != 2 or scores.shape[1] != len(objectives):
            raise ConfigError(f"calibration scores must be [N, {len(objectives)}], got {tuple(scores.shape)}")
        ranges, specs, sources = {}, {}, {}
        for j, objective in enumerate(objectives):
            low, high = percentile_range(scores[:, j], lower, upper) if len(scores) else (math.nan, math.nan)
            if not low < high:
                raise ConfigError(
                    f"cannot calibrate {objective.name!r}: its {lower:g}th and {upper:g}th percentiles over "
                    f"{len(scores)} responses are {low} and {high}; give more varied reference responses or a "
                    f"fixed range ({objective.name}:range=LOW..HIGH)"
                )
            ranges[objective.name] = LinearRange(low, high, clip)
            specs[objective.name] = getattr(objective, "spec", None)
            sources[objective.name] = f"calibrated: {lower:g}th-{upper:g}th percentile of {len(scores)} responses"
        return cls(ranges, specs, sources)

    def apply(self, objectives: ObjectiveSet) -> ObjectiveSet:
        """A new set whose objectives are wrapped in :class:`Normalized` with these ranges."""
        missing = [name for name in objectives.names if name not in self.ranges]
        if missing:
            raise ConfigError(
                f"the normalizer has no range for {', '.join(missing)} (it covers {', '.join(self.ranges) or 'none'}); "
                "calibrate again with these objectives"
            )
        wrapped = []
        for objective in objectives:
            made_for, spec = self.specs.get(objective.name), getattr(objective, "spec", None)
            if made_for is not None and spec is not None and made_for != spec:
                raise ConfigError(
                    f"the normalizer's range for {objective.name!r} was made for spec {made_for!r}, "
                    f"but the objective is {spec!r}; calibrate again or use the same spec"
                )
            wrapped.append(Normalized(objective, self.ranges[objective.name]))
        return ObjectiveSet(wrapped)

    def to_dict(self) -> dict:
        entries = [
            {"name": name, "spec": self.specs.get(name), "low": scale.low, "high": scale.high, "clip": scale.clip,
             "source": self.sources.get(name, "fixed")}
            for name, scale in self.ranges.items()
        ]
        return {"format": FORMAT, "objectives": entries}

    @classmethod
    def from_dict(cls, data: object) -> Normalizer:
        try:
            parsed = _File.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"not a polyalign normalizer: {where}: {first['msg']}") from None
        if parsed.format != FORMAT:
            raise ConfigError(f"normalizer format {parsed.format!r} is not supported; expected {FORMAT!r}")
        ranges = {e.name: LinearRange(e.low, e.high, e.clip) for e in parsed.objectives}
        return cls(ranges, {e.name: e.spec for e in parsed.objectives}, {e.name: e.source for e in parsed.objectives})

    def save(self, path: str | Path) -> Path:
        return write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", "normalizer file")

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        try:
            return cls.from_dict(read_json(path, "normalizer file"))
        except ConfigError as exc:
            if isinstance(exc, FileError):
                raise
            raise ConfigError(f"normalizer file {str(Path(path))!r}: {exc}") from None


def normalize_scores(scores: torch.Tensor, names: Sequence[str], normalizer: Normalizer) -> torch.Tensor:
    """Apply ``normalizer`` column by column to an already computed ``[N, M]`` score matrix."""
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise ObjectiveError(f"scores must be [N, {len(names)}], got {tuple(scores.shape)}")
    missing = [name for name in names if name not in normalizer.ranges]
    if missing:
        raise ConfigError(f"the normalizer has no range for {', '.join(missing)}")
    return torch.stack([normalizer.ranges[name].apply(scores[:, j]) for j, name in enumerate(names)], dim=1)
