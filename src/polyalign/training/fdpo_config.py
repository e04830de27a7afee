"""An f-DPO expert run as data (``polyalign train-expert --config expert.yaml``), unknown keys refused by name.

```yaml
output: runs/expert-harmless
objective: harmless               # what the expert is for: its name in MOD and in its metadata
policy: {kind: lora, model: smollm2-135m-instruct, rank: 8}   # or kind: full
divergence: jsd                   # reverse_kl (DPO), forward_kl, jsd, alpha:A, jeffrey: MOD's names
beta: 0.1
preferences: pairs.jsonl          # a .jsonl/.json/.csv file or hf:DATASET ... or, instead, generate:
generate: {objectives: [safety], prompts: builtin:train, prompt_limit: 64, k: 4,
           generation: {max_new_tokens: 48}}
steps: 100
batch_size: 8
optim: {lr: 5.0e-4}
```

The run folder, checkpoints and resume are :mod:`polyalign.training.run`'s, as for CLP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from polyalign.errors import ConfigError
from polyalign.interface import GenerationConfig, config_error
from polyalign.models import DEFAULT_MODEL
from polyalign.training.config import OptimSection, _Strict, apply_overrides, refuse_unknown_settings, run_identity


class ExpertPolicySection(_Strict):
    """What trains: a LoRA adapter on ``model`` (the reference stays the base with the adapter off) or the
    whole model (the reference is a frozen copy)."""

    kind: Literal["lora", "full"] = "lora"
    model: str = Field(DEFAULT_MODEL, description="The reference (SFT) model the expert starts from.")
    rank: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0.0, description="LoRA scaling numerator (scaling = lora_alpha / rank).")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1, description="Module names that get LoRA adapters.")
    device: str | None = None
    dtype: str | None = None
    chat: bool = Field(True, description="Format prompts with the chat template, as MOD does when decoding.")


class GenerateSection(_Strict):
    """Preference pairs made from objectives: ``k`` samples per prompt from the reference, best against worst."""

    objectives: list[str] = Field(min_length=1, description="Objective specs (polyalign.objectives).")
    weights: list[float] | None = Field(None, description="One weight per objective (default: equal).")
    prompts: str | list[str] = Field("builtin:train", description="builtin:train, a .txt/.jsonl/.json file, "
                                                                  "hf:NAME, or the prompts themselves.")
    prompt_limit: int | None = Field(None, ge=1)
    k: int = Field(4, ge=2, description="Responses sampled per prompt.")
    seed: int = Field(0, ge=0, lt=2**63)
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(strategy="sample",
                                                                                  max_new_tokens=64))

    @model_validator(mode="after")
    def _check(self) -> GenerateSection:
        if self.weights is not None and len(self.weights) != len(self.objectives):
            raise ValueError(f"generate.weights has {len(self.weights)} values for {len(self.objectives)} objectives")
        return self


class ExpertConfig(_Strict):
    """One f-DPO expert (Wang et al. 2023) trained on preference pairs, for MOD under the same divergence."""

    output: str = Field(description="Run folder: config, metrics.jsonl, checkpoints/, expert/.")
    objective: str | None = Field(None, description="The expert's name (default: the generating objectives, or "
                                                    "'expert').")
    policy: ExpertPolicySection = Field(default_factory=ExpertPolicySection)
    divergence: str = Field("reverse_kl", description="reverse_kl, forward_kl, jsd, alpha:A or jeffrey.")
    beta: float = Field(0.1, gt=0.0, description="KL (f-divergence) strength of the implicit reward.")
    preferences: str | None = Field(None, description="A .jsonl/.json/.csv file or hf:DATASET[:SPLIT],...")
    preference_limit: int | None = Field(None, ge=1)
    generate: GenerateSection | None = None
    max_length: int = Field(512, ge=2, description="Prompt + response tokens per sequence; longer responses are "
                                                   "cut.")
    steps: int = Field(100, ge=1, description="Optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Pairs per micro-batch and process.")
    optim: OptimSection = Field(default_factory=lambda: OptimSection(lr=5e-4))
    seed: int = Field(0, ge=0, lt=2**63)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_with: list[str] = Field(default_factory=list)

    @field_validator("divergence")
    @classmethod
    def _divergence(cls, value: str) -> str:
        from polyalign.training.fdpo import expert_divergence

        return expert_divergence(value).name  # canonical: the name MOD compares

    @model_validator(mode="after")
    def _one_source(self) -> ExpertConfig:
        if (self.preferences is None) == (self.generate is None):
            raise ValueError("give preferences (a file or hf:DATASET) or generate (objectives), exactly one")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output).expanduser()

    @property
    def expert_name(self) -> str:
        if self.objective:
            return self.objective
        if self.generate is not None and len(self.generate.objectives) == 1:
            return self.generate.objectives[0].split(",")[0].split(":")[0]
        return "expert"

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume``: everything but logging (and steps under a constant schedule)."""
        return run_identity(self)


def parse_expert_config(data: Any, source: str = "expert config") -> ExpertConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings (output, divergence, preferences, ...)")
    try:
        return ExpertConfig.model_validate(data)
    except ValidationError as exc:
        refuse_unknown_settings(exc, source, "polyalign.training.fdpo_config.ExpertConfig")
        for error in exc.errors():  # a divergence MOD cannot use: its own message, with the reason
            ctx = error.get("ctx") or {}
            if error["loc"] == ("divergence",) and isinstance(ctx.get("error"), ConfigError | ValueError):
                raise ConfigError(f"{source}: {ctx['error']}") from None
        raise config_error(exc, f"{source}: ") from None


def load_expert_config(path: str | Path | None, overrides: list[str] | None = None) -> ExpertConfig:
    """An expert config from YAML (or from ``overrides`` alone when ``path`` is None)."""
    from polyalign.files import read_yaml

    data: Any = {}
    if path is not None:
        data = read_yaml(Path(path), "expert config")
        if not isinstance(data, dict):
            raise ConfigError(f"expert config {path}: expected a mapping of settings")
    return parse_expert_config(apply_overrides(data, overrides or []), str(path or "options"))
