"""A training run as data: one pydantic config (YAML on disk), unknown keys refused by name.

```yaml
output: runs/clp-concise-sentiment
policy: {kind: clp, model: smollm2-135m-instruct, selector: lora, alpha_min: 0.01, rank: 8}
objectives: [concise, sentiment]
prompts: builtin:train
steps: 200
batch_size: 8
estimator: reinforce             # or rloo (with rloo_k samples per prompt)
sampler: {concentration: 1.0}    # w ~ Dirichlet(c); alpha = f_mix^-1(U) unless fixed (alpha: 0.1)
optim: {lr: 1.0e-3, schedule: cosine, warmup_steps: 10, max_grad_norm: 1.0}
generation: {max_new_tokens: 32, strategy: sample}
checkpoint_every: 50
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polyalign.errors import ConfigError
from polyalign.interface import GenerationConfig, config_error
from polyalign.models import DEFAULT_MODEL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PolicySection(_Strict):
    """The policy to train, initialised at the reference (Algorithm 1). ``kind`` says how (w, alpha) reach it:

    * ``clp``: per-objective copies mixed by Eq. 3, w and alpha sampled per batch (CLP Algorithm 1);
    * ``prompted``: one copy, the weighting written only into the prompt (CLP Appendix A.2), w and alpha sampled;
    * ``morlhf``: one copy trained at the fixed ``sampler.weights`` and ``sampler.alpha``;
    * ``experts``: one ``morlhf`` run per objective at ``w = e_i`` (``steps`` split evenly between them), in
      ``OUTPUT/experts/<objective>``: the experts of Rewarded Soups, MOD and DeRa.
    """

    kind: Literal["clp", "prompted", "morlhf", "experts"] = "clp"
    model: str = Field(DEFAULT_MODEL, description="The reference (SFT) model the copies start from.")
    selector: str = Field("lora", description="Which parameters get per-objective copies (see CLP selectors).")
    f_mix: Literal["softmdp", "linear"] = "softmdp"
    alpha_min: float = Field(0.01, gt=0.0, lt=1.0)
    rank: int = Field(8, ge=1, description="LoRA rank (selector lora).")
    lora_alpha: float = Field(16.0, gt=0.0, description="LoRA scaling numerator (scaling = lora_alpha / rank).")
    prompt_conditioning: bool = Field(False, description="Also write each row's weighting into its prompt "
                                                          "(CONDPROMPT, CLP Appendix A.2).")
    device: str | None = None
    dtype: str | None = None
    chat: bool = True

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        from polyalign.conditioning import parse_selector

        parse_selector(value)
        return value


class SamplerSection(_Strict):
    """How each batch's (w, alpha) is drawn (Algorithm 1), or held fixed."""

    concentration: float | list[float] = Field(1.0, description="Dirichlet concentration c (one, or one per "
                                                                  "objective).")
    weights: list[float] | None = Field(None, description="Hold w fixed (MORLHF, single-objective experts).")
    alpha: float | None = Field(None, description="Hold alpha fixed, in [alpha_min, 1]; none samples it.")


class OptimSection(_Strict):
    lr: float = Field(1e-3, gt=0.0, description="Policy learning rate (AdamW).")
    value_lr: float = Field(1e-3, gt=0.0, description="Value model learning rate.")
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm (none: no clipping).")
    accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")


class TrainConfig(_Strict):
    """One training run of a conditioned policy by multi-task RL (CLP Algorithm 1)."""

    output: str = Field(description="Run folder: config, metrics.jsonl, checkpoints/.")
    policy: PolicySection = Field(default_factory=PolicySection)
    objectives: list[str] = Field(min_length=1, description="Objective specs; their order is the weight order.")
    normalizer: str | None = Field(None, description="A normaliser JSON (polyalign score --save-normalizer).")
    prompts: str = Field("builtin:train", description="builtin:train, a .txt/.jsonl/.json file, or hf:NAME.")
    prompt_limit: int | None = Field(None, ge=1)
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Prompts per micro-batch and process.")
    estimator: Literal["reinforce", "rloo"] = "reinforce"
    rloo_k: int = Field(2, ge=2, description="Samples per prompt for RLOO.")
    value_coef: float = Field(1.0, ge=0.0, description="Weight of the value loss (REINFORCE).")
    sampler: SamplerSection = Field(default_factory=SamplerSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(
        strategy="sample", max_new_tokens=32))
    seed: int = Field(0, ge=0, lt=2**63)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1, description="How many recent checkpoints to keep.")
    log_with: list[str] = Field(default_factory=list, description="accelerate trackers, e.g. [tensorboard].")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        m = len(self.objectives)
        if self.sampler.weights is not None and len(self.sampler.weights) != m:
            raise ValueError(f"sampler.weights has {len(self.sampler.weights)} values for {m} objectives")
        if isinstance(self.sampler.concentration, list) and len(self.sampler.concentration) != m:
            raise ValueError(f"sampler.concentration has {len(self.sampler.concentration)} values for {m} "
                             "objectives")
        alpha = self.sampler.alpha
        if alpha is not None and not self.policy.alpha_min <= alpha <= 1.0:
            raise ValueError(f"sampler.alpha = {alpha} lies outside [alpha_min, 1] = [{self.policy.alpha_min}, 1]")
        kind = self.policy.kind
        if kind in ("morlhf", "experts") and self.sampler.alpha is None:
            raise ValueError(f"policy.kind {kind} trains at one fixed alpha: set sampler.alpha")
        if kind == "morlhf" and self.sampler.weights is None:
            raise ValueError("policy.kind morlhf trains at one fixed weighting: set sampler.weights")
        if kind == "experts":
            if self.sampler.weights is not None:
                raise ValueError("policy.kind experts sets each expert's weights to e_i itself: remove "
                                 "sampler.weights")
            if self.steps % m:
                raise ValueError(f"policy.kind experts splits steps evenly between the {m} experts: make steps "
                                 f"({self.steps}) a multiple of {m}")
        if kind == "prompted" and "prompt_conditioning" in self.policy.model_fields_set \
                and not self.policy.prompt_conditioning:
            raise ValueError("policy.kind prompted always writes the weighting into the prompt: remove "
                             "policy.prompt_conditioning: false")
        if self.generation.strategy != "sample":
            raise ValueError("generation.strategy must be 'sample': the policy gradient needs samples from pi")
        if self.generation.n != 1:
            raise ValueError("generation.n must stay 1; RLOO draws rloo_k samples per prompt itself")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output).expanduser()

    def expert_runs(self, names: list[str]) -> list[TrainConfig]:
        """For ``policy.kind: experts``: one ``morlhf`` run per objective at ``w = e_i``, each ``steps / m`` long,
        in ``OUTPUT/experts/<name>`` (``names``: the objectives' names)."""
        m = len(self.objectives)
        runs = []
        for i, name in enumerate(names):
            weights = [1.0 if j == i else 0.0 for j in range(m)]
            runs.append(self.model_copy(deep=True, update={
                "output": str(self.run_dir / "experts" / _folder_name(name)),
                "policy": self.policy.model_copy(update={"kind": "morlhf"}),
                "sampler": self.sampler.model_copy(update={"weights": weights}),
                "steps": self.steps // m,
                "seed": self.seed + i}))
        return runs

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue a run: everything but the logging, and the length when the
        learning rate does not depend on it (a constant schedule)."""
        return run_identity(self)


def run_identity(config: BaseModel) -> dict[str, Any]:
    """A run config's identity for ``--resume``: its settings but the logging ones, and ``steps`` under a constant
    schedule (the learning rate does not depend on the length then)."""
    data = config.model_dump(mode="json")
    for key in ("log_with", "keep_checkpoints") + (("steps",) if config.optim.schedule == "constant" else ()):
        data.pop(key)
    return data


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "objective"


def parse_train_config(data: Any, source: str = "training config") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings (output, policy, objectives, ...)")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        refuse_unknown_settings(exc, source, "polyalign.training.TrainConfig")
        raise config_error(exc, f"{source}: ") from None


def refuse_unknown_settings(exc: ValidationError, source: str, fields_of: str) -> None:
    """Raise a :class:`ConfigError` naming the first unknown setting (by its dotted path), if any."""
    unknown = [".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        raise ConfigError(f"{source}: unknown setting {unknown[0]!r}; see the fields of {fields_of}") from None


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key.sub=value`` overrides (values read as YAML) applied to a config mapping."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must read key=value, e.g. optim.lr=1e-4")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 as a string
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A training config from YAML, with ``key=value`` overrides."""
    from polyalign.files import read_yaml

    data = read_yaml(Path(path), "training config")
    if not isinstance(data, dict):
        raise ConfigError(f"training config {path}: expected a mapping of settings")
    return parse_train_config(apply_overrides(data, overrides or []), str(path))
