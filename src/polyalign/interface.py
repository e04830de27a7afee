"""The one interface every steerable method implements (DESIGN.md, "One interface").

Evaluation, the CLI and the server only ever talk to a :class:`SteerablePolicy`; a new method is a new
implementation of it, never a new branch in a shared loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyalign.errors import ConfigError, WeightsError

WeightsLike = Sequence[float] | Sequence[Sequence[float]] | torch.Tensor


class GenerationConfig(BaseModel):
    """Decoding options shared by every method."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1, le=32768)
    min_new_tokens: int = Field(0, ge=0)
    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    temperature: float = Field(1.0, gt=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    num_beams: int = Field(4, ge=1)
    length_penalty: float = 1.0
    stop: list[str] = Field(default_factory=list)
    seed: int | None = 0

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        return self


@dataclass
class Generation:
    """One response: text, token ids and, where the method can give them, per-token log-probs."""

    prompt: str
    text: str
    token_ids: list[int]
    weights: list[float]
    finish_reason: Literal["eos", "stop", "length"] = "length"
    logprobs: list[float] | None = None
    """Log-prob of each generated token under the (combined) policy."""
    ref_logprobs: list[float] | None = None
    """Log-prob of each generated token under the reference model, for KL estimates."""
    alpha: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def kl(self) -> float | None:
        """Single-sample estimate of KL(pi || pi_ref): sum_t log pi(y_t) - log pi_ref(y_t)."""
        if self.logprobs is None or self.ref_logprobs is None:
            return None
        return float(sum(a - b for a, b in zip(self.logprobs, self.ref_logprobs, strict=True)))


@runtime_checkable
class SteerablePolicy(Protocol):
    """Anything that generates with a per-request trade-off ``weights`` over ``objectives``."""

    objectives: list[str]

    def generate(
        self,
        prompts: Sequence[str],
        weights: WeightsLike,
        alpha: float | None = None,
        config: GenerationConfig | None = None,
    ) -> list[Generation]: ...


def weight_matrix(weights: WeightsLike, n_rows: int, objectives: Sequence[str]) -> torch.Tensor:
    """Validate ``weights`` (one vector, or one per prompt) and return a float64 ``[n_rows, M]`` tensor."""
    m = len(objectives)
    try:
        w = torch.as_tensor(weights, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"weights must be numbers, one per objective {list(objectives)}: {exc}") from None
    if w.ndim == 1:
        w = w.unsqueeze(0).expand(n_rows, -1)
    if w.ndim != 2 or w.shape[-1] != m:
        raise WeightsError(
            f"expected {m} weights, one per objective {list(objectives)}, got shape {tuple(w.shape)}"
        )
    if w.shape[0] != n_rows:
        raise WeightsError(f"got {w.shape[0]} weight vectors for {n_rows} prompts; give one, or one per prompt")
    if not torch.isfinite(w).all():
        raise WeightsError(f"weights must be finite, got {w.tolist()}")
    if (w == 0).all(dim=-1).any():
        raise WeightsError("weights are all zero: give at least one non-zero weight")
    return w.contiguous()


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """A non-empty list of non-empty prompt strings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ConfigError(f"prompt {i} is empty: give some text to respond to")
    return prompts


def check_alpha(alpha: float | None) -> float | None:
    """KL strength in [0, 1] (CLP paper, Eq. 1) or None."""
    if alpha is None:
        return None
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise WeightsError(f"alpha (KL strength) must lie in [0, 1], got {alpha}")
    return float(alpha)


def read_prompts(path: Path) -> list[str]:
    """Prompts from .txt (one per line), .jsonl (a "prompt" field per line) or .json (a list)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".json":
            rows = json.loads(text)
        else:
            return [line for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prompts file {path} is not valid JSON: {exc}") from None
    if not isinstance(rows, list):
        raise ConfigError(f"prompts file {path} must hold a list of prompts")
    out = []
    for i, row in enumerate(rows):
        value = row.get("prompt") if isinstance(row, dict) else row
        if not isinstance(value, str):
            raise ConfigError(f"prompts file {path}, item {i}: expected a string or an object with a 'prompt' string")
        out.append(value)
    return out
