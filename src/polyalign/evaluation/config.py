"""The evaluation config: pydantic models loadable from YAML, and the hash that ties a run folder to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyalign.errors import ConfigError
from polyalign.evaluation.grid import Weighting, build_weightings, line_grid, simplex_grid
from polyalign.files import read_yaml
from polyalign.interface import GenerationConfig, check_prompts

DEFAULT_JUDGE = "smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineConfig(_Strict):
    """Evenly spaced weightings from ``start`` to ``stop``; may leave the simplex (extrapolation)."""

    start: list[float]
    stop: list[float]
    points: int = Field(ge=2)


class TargetConfig(_Strict):
    """Values a method promises at a weighting (e.g. a target length), checked by the calibration error."""

    weights: list[float]
    values: dict[str, float]


class WeightsConfig(_Strict):
    """The weight grid: a simplex (points per edge), lines, explicit vectors, held-out vectors, and alphas."""

    simplex: int | None = Field(None, ge=2)
    lines: list[LineConfig] = Field(default_factory=list)
    explicit: list[list[float]] = Field(default_factory=list)
    held_out: list[list[float]] = Field(default_factory=list)
    """Weightings no method trained on; evaluated like the others and marked in every output."""
    targets: list[TargetConfig] = Field(default_factory=list)

    def vectors(self, m: int) -> list[list[float]]:
        grid = [list(w) for w in simplex_grid(m, self.simplex)] if self.simplex else []
        for line in self.lines:
            grid += [list(w) for w in line_grid(line.start, line.stop, line.points)]
        return grid + [list(w) for w in self.explicit]


class MethodConfig(BaseModel):
    """A method: ``name``, registry ``kind``, generation ``alphas``; every other key goes to the builder."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    kind: str
    alphas: list[float | None] = Field(default_factory=lambda: [None])

    @property
    def params(self) -> dict:
        return dict(self.model_extra or {})


class JudgeConfig(_Strict):
    """Pairwise judging: ``pairs`` of method names (default: every method against the baseline)."""

    model: str = DEFAULT_JUDGE
    pairs: list[tuple[str, str]] | None = None
    criteria: list[str] = Field(default_factory=lambda: ["conciseness", "quality"])
    tie: bool = True
    batch_size: int = Field(8, ge=1)
    device: str | None = None


class EvalConfig(_Strict):
    """Everything an evaluation run depends on."""

    objectives: list[str] = Field(min_length=1)
    methods: list[MethodConfig] = Field(min_length=1)
    prompts: list[str] | None = None
    prompts_file: str | None = None
    """A prompt source: a .txt/.jsonl/.json file (relative to the YAML file), builtin:heldout, or hf:NAME."""
    prompt_limit: int | None = Field(None, ge=1)
    """Use only the first N prompts of ``prompts_file``."""
    weights: WeightsConfig = Field(default_factory=lambda: WeightsConfig(simplex=11))
    value_alpha: float = Field(0.1, ge=0.0, le=1.0)
    """alpha of V = E[(1-alpha) R - alpha KL] for points generated without an alpha."""
    baseline: str | None = None
    """Method the Figure 4 ratio divides by (the paper's RS); default: the first method."""
    reference_point: list[float] | None = None
    """Hypervolume reference point in objective units; default: each objective's worst mean minus 10% of range."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    batch_size: int | None = Field(None, ge=1)
    score_batch_size: int = Field(32, ge=1)
    n_bootstrap: int = Field(1000, ge=10)
    examples: int = Field(3, ge=0)
    judge: JudgeConfig | None = None
    output_dir: Path = Path("runs/evaluation")

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"method names must be unique, got {names}")
        if (self.prompts is None) == (self.prompts_file is None):
            raise ValueError("give the prompts either inline (prompts:) or from a file (prompts_file:), not both")
        if self.reference_point is not None and len(self.reference_point) != len(self.objectives):
            raise ValueError(f"reference_point has {len(self.reference_point)} values but there are "
                             f"{len(self.objectives)} objectives {self.objectives}; give one value per objective")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a method; methods: {names}")
        for pair in (self.judge.pairs or []) if self.judge else []:
            for n in pair:
                if n not in names:
                    raise ValueError(f"judge pair {list(pair)} names {n!r}, which is not a method; methods: {names}")
        return self

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.methods[0].name

    def load_prompts(self) -> list[str]:
        if self.prompts is not None:
            return check_prompts(self.prompts)
        from polyalign.prompts import load_prompts

        return check_prompts(load_prompts(self.prompts_file, limit=self.prompt_limit))

    def weightings(self, objectives: list[str], alphas: list[float | None]) -> list[Weighting]:
        """This config's weight grid for one method's alphas."""
        targets = {tuple(float(x) for x in t.weights): t.values for t in self.weights.targets}
        return build_weightings(objectives, self.weights.vectors(len(objectives)), alphas, self.weights.held_out,
                                targets)

    def fingerprint(self) -> str:
        """sha256 of everything that changes the results (not the output folder or the number of examples
        shown in the report); prompt files count by their content, not their path."""
        data = self.model_dump(mode="json", exclude={"output_dir", "prompts_file", "prompts", "examples"})
        data["prompts"] = self.load_prompts()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def load_config(path: str | Path) -> EvalConfig:
    """Read an :class:`EvalConfig` from YAML; a relative prompts_file is relative to the YAML file."""
    path = Path(path)
    data = read_yaml(path, "config file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of settings, got {type(data).__name__}")
    prompts_file = data.get("prompts_file")
    if isinstance(prompts_file, str) and not prompts_file.startswith(("builtin:", "hf:")) \
            and not Path(prompts_file).is_absolute():
        data["prompts_file"] = str(path.parent / prompts_file)
    return parse_config(data, source=str(path))


def parse_config(data: dict, source: str = "config") -> EvalConfig:
    """Validate a config mapping; pydantic's errors become one :class:`ConfigError` naming each bad field."""
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
