"""Result records: plain pydantic models, written to and read back from ``results.json`` unchanged."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Response(BaseModel):
    """One scored response."""

    prompt_index: int
    prompt: str
    text: str
    scores: list[float]
    kl: float | None = None
    finish_reason: str = "length"


class PointResult(BaseModel):
    """One method at one weighting: objective means with bootstrap CIs, KL, KL-regularised values, responses."""

    weights: list[float]
    alpha: float | None = None
    value_alpha: float
    """alpha used in V = E[(1-alpha) R - alpha KL]: the generation alpha, else the configured one."""
    held_out: bool = False
    label: str
    mean: list[float]
    ci_low: list[float]
    ci_high: list[float]
    kl: float | None = None
    kl_ci_low: float | None = None
    kl_ci_high: float | None = None
    value: list[float | None]
    """V_{alpha,R_i} per objective (CLP paper Eq. 1)."""
    weighted_value: float | None = None
    """V_{alpha,R_w} with R_w = sum_i w_i R_i, the value compared in the CLP paper's Figure 4."""
    targets: list[float | None] | None = None
    responses: list[Response] = Field(default_factory=list)


class SweepResult(BaseModel):
    """One method over every weighting, on the same prompts and generation config as the others."""

    method: str
    objectives: list[str]
    policy_objectives: list[str]
    higher_is_better: list[bool]
    single_point: bool = False
    points: list[PointResult]
    timings: dict[str, float] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)
    """Weightings of the grid outside the method's weight domain (label -> reason), not generated."""


class FrontIndicators(BaseModel):
    """Indicators of one method's points at one generation alpha."""

    method: str
    alpha: float | None = None
    n_points: int
    pareto_labels: list[str]
    hypervolume: float
    hypervolume_held_out: float | None = None
    coverage: float | None = None
    spearman: list[float | None]
    spearman_p: list[float | None]
    spread: list[float]
    spacing: float | None = None
    calibration_error: list[float | None] | None = None


class RelativeValue(BaseModel):
    """CLP paper Figure 4: ``1 - V(method)/V(baseline)`` at one weighting."""

    method: str
    baseline: str
    label: str
    held_out: bool
    value: float | None
    baseline_value: float | None
    relative: float | None


class JudgeCount(BaseModel):
    """Consistent wins, ties and losses of ``method_a`` against ``method_b`` at one weighting."""

    method_a: str
    method_b: str
    criterion: str
    label: str
    held_out: bool
    wins: int
    ties: int
    losses: int
    inconsistent: int

    @property
    def consistent(self) -> int:
        return self.wins + self.ties + self.losses

    def rate(self, outcome: str) -> float | None:
        """Share of the consistent comparisons with this outcome ('wins', 'ties' or 'losses')."""
        return getattr(self, outcome) / self.consistent if self.consistent else None


class EvaluationResult(BaseModel):
    """Everything one run produced; ``results.json`` is this model."""

    config: dict = Field(default_factory=dict)
    config_hash: str = ""
    objectives: list[str]
    higher_is_better: list[bool]
    reference_point: list[float]
    reference_point_source: str
    baseline: str | None = None
    sweeps: list[SweepResult]
    indicators: list[FrontIndicators] = Field(default_factory=list)
    relative_values: list[RelativeValue] = Field(default_factory=list)
    judge: list[JudgeCount] = Field(default_factory=list)
    judge_model: str | None = None
