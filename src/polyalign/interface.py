"""The one interface every steerable method implements (DESIGN.md, "One interface").

Evaluation, the CLI and the server only ever talk to a :class:`SteerablePolicy`; a new method is a new
implementation of it, never a new branch in a shared loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyalign.errors import ConfigError, WeightsError
from polyalign.weights import REAL, WeightDomain, WeightsLike


class _RaisesConfigError(type(BaseModel)):
    """``Model(...)`` raises :class:`ConfigError`; pydantic's own paths (``model_validate``, a field of another
    model) keep their ``ValidationError``, which a custom ``__init__`` would wrap in a second one."""

    def __call__(cls, *args: object, **kwargs: object):
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc) from None


class GenerationConfig(BaseModel, metaclass=_RaisesConfigError):
    """Decoding options shared by every method (and, field by field, the CLI's ``generate`` options).

    An invalid value, given to the constructor or assigned later, is a :class:`~polyalign.errors.ConfigError`
    naming each bad field (``model_validate`` keeps pydantic's ``ValidationError``, for callers that format it).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __setattr__(self, name: str, value: object) -> None:
        if name not in type(self).model_fields:
            raise ConfigError(f"GenerationConfig has no option {name!r}; options: {', '.join(type(self).model_fields)}")
        old = self.__dict__[name]
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            self.__dict__[name] = old  # pydantic keeps a value that only the model validator refused
            raise config_error(exc) from None

    max_new_tokens: int = Field(64, ge=1, le=32768, description="Most tokens to generate per response.")
    min_new_tokens: int = Field(0, ge=0, description="Forbid EOS before this many tokens.")
    strategy: Literal["greedy", "sample", "beam"] = Field("greedy", description="greedy, sample or beam.")
    n: int = Field(1, ge=1, le=64, description="Responses per prompt (sample: independent draws; beam: the n best).")
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="Sampling temperature (after combining).")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Sample from the smallest set holding mass p.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0,
                                      description="CTRL's penalty on tokens already in the prompt or response.")
    num_beams: int = Field(4, ge=1, le=256, description="Beams per prompt (strategy beam).")
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0,
                                  description="Beam score = sum log p / length ** length_penalty.")
    stop: list[str] = Field(default_factory=list, description="Stop string (repeatable); cut from the response.")
    stop_token_ids: list[int] = Field(default_factory=list, description="Token id that ends a response (repeatable).")
    seed: int | None = Field(None, ge=0, lt=2**63,
                             description="Sampling seed; none draws a fresh one (recorded in each Generation).")

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if any(t < 0 for t in self.stop_token_ids):
            raise ValueError("stop token ids must be non-negative")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        if self.n > 1 and self.strategy == "greedy":
            raise ValueError("n > 1 needs strategy sample or beam: greedy decoding gives n identical responses")
        if self.strategy == "beam" and self.n > self.num_beams:
            raise ValueError(f"n ({self.n}) must not exceed num_beams ({self.num_beams})")
        return self


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """One :class:`ConfigError` naming each invalid field of a pydantic ``ValidationError``."""
    problems = "; ".join(f"{prefix}{'.'.join(str(x) for x in err['loc']) or 'config'}: {err['msg']}"
                         for err in exc.errors())
    return ConfigError(problems)


@dataclass
class Usage:
    """Token counts of one response, as OpenAI reports them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Generation:
    """One response: text, token ids and, where the method can give them, per-token log-probs."""

    prompt: str
    text: str
    token_ids: list[int]
    weights: list[float]
    finish_reason: Literal["eos", "stop", "length"] = "length"
    logprobs: list[float] | None = None
    """Log-prob of each generated token under the policy's own distribution (MOD: the combined one), before
    the decoding constraints (min_new_tokens, repetition_penalty) and the sampling warpers, for every strategy;
    equal to :func:`~polyalign.policies.sequence_logprobs` on the same tokens."""
    ref_logprobs: list[float] | None = None
    """Log-prob of each generated token under the reference model, for KL estimates."""
    alpha: float | None = None
    prompt_token_ids: list[int] = field(default_factory=list)
    """The tokens the policy read as its prompt (chat template included)."""
    sample_index: int = 0
    """Which of the ``n`` responses to this prompt this is."""
    seed: int | None = None
    """The sampling seed of this response (sampling only): rerun with it to reproduce the response."""
    extra: dict = field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        return Usage(len(self.prompt_token_ids), len(self.token_ids))

    @property
    def kl(self) -> float | None:
        """Single-sample estimate of KL(pi || pi_ref): sum_t log pi(y_t) - log pi_ref(y_t)."""
        if self.logprobs is None or self.ref_logprobs is None:
            return None
        return float(sum(a - b for a, b in zip(self.logprobs, self.ref_logprobs, strict=True)))


FinishReason = Literal["eos", "stop", "length"]


@dataclass
class TokenEvent:
    """One generated token of row ``index`` (prompt ``index // n``); ``text`` is the new text since its last
    event (partial UTF-8 characters and possible stop-string prefixes are held back)."""

    index: int
    token_id: int
    text: str
    finish_reason: FinishReason | None = None


@runtime_checkable
class SteerablePolicy(Protocol):
    """Anything that generates with a per-request trade-off ``weights`` over ``objectives``.

    Policies may also declare ``weight_domain`` (a :class:`~polyalign.weights.WeightDomain`, default any real
    weights), ``alpha_meaning`` (what ``alpha`` does for them) and ``steerable`` (False for a plain model that
    ignores the weights: one point on a chart).
    """

    objectives: list[str]

    def generate(
        self,
        prompts: Sequence[str],
        weights: WeightsLike,
        alpha: float | None = None,
        config: GenerationConfig | None = None,
    ) -> list[Generation]: ...

    def stream(
        self,
        prompts: Sequence[str] | str,
        weights: WeightsLike,
        alpha: float | None = None,
        config: GenerationConfig | None = None,
    ) -> Iterator[TokenEvent]: ...


def weight_domain(policy: object) -> WeightDomain:
    """The policy's declared weight domain (any real weights when it declares none)."""
    return getattr(policy, "weight_domain", REAL)


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """A non-empty list of non-empty prompt strings, each one text that a tokenizer can encode."""
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Iterable):
        raise ConfigError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("no prompts given")
    for i, p in enumerate(prompts):
        if p is not None and not isinstance(p, str):
            raise ConfigError(f"prompt {i} is a {type(p).__name__}, not a string")
        if not p or not p.strip():
            raise ConfigError(f"prompt {i} is empty: give some text to respond to")
        check_text(p, f"prompt {i}")
    return prompts


def check_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode; a lone surrogate (what Python makes of bytes that are not UTF-8 in argv,
    stdin or file names, or a JSON ``\\ud800`` escape) is refused, since no tokenizer can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: one undecodable byte
            raise ConfigError(f"{what} is not UTF-8 text (byte 0x{code - 0xDC00:02x} at character {exc.start}; "
                              "Latin-1 input?): pass UTF-8 text") from None
        raise ConfigError(f"{what} holds a lone surrogate U+{code:04X} at character {exc.start}, which is not text; "
                          "pass valid UTF-8 text") from None
    return text


def check_alpha(alpha: float | None) -> float | None:
    """KL strength in [0, 1] (CLP paper, Eq. 1) or None."""
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise WeightsError(f"alpha (KL strength) must be a number in [0, 1] or None, got {type(alpha).__name__}")
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise WeightsError(f"alpha (KL strength) must lie in [0, 1], got {alpha}")
    return float(alpha)


def read_prompts(path: Path) -> list[str]:
    """Prompts from .txt (one per line), .jsonl (a "prompt" field per line) or .json (a list)."""
    from polyalign.files import read_text

    path = Path(path)
    text = read_text(path, "prompts file")
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
