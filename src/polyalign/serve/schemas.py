"""Request bodies of the OpenAI-compatible API, and OpenAI's JSON error shape.

The bodies are pydantic models checked strictly (a string is not a number, NaN and infinities are refused, an
unknown field is an error rather than silently ignored), so every bad request becomes one 4xx answer naming
the field. Nothing in a request names a file, a model path or a module: ``model`` is only ever compared with
the names of the policies the server loaded at start-up.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("server_error" if status >= 500 else "rate_limit_error" if status == 429
                              else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(exc: ValidationError) -> ApiError:
    """One 400 naming each invalid field of a request body."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "body"
        problems.append(f"{where}: {err['msg']}")
    first = ".".join(str(x) for x in exc.errors()[0]["loc"]) if exc.errors() else None
    return ApiError(400, "; ".join(problems), param=first or None, code="invalid_value")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class Sampling(_Body):
    """What both endpoints take: the decoding options OpenAI defines that polyalign honours, plus the steering."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    objective_weights: dict[str, float] | None = Field(
        None, description="Objective name -> weight; objectives not named weigh 0; none: the policy's default.")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="KL strength, for policies that take one.")
    spread: bool = Field(False, description="With n > 1: decode the n choices at n weightings spread around "
                                            "objective_weights (decision support).")
    spread_radius: float = Field(0.5, gt=0.0, le=1.0, description="How far the spread weightings reach.")

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, value: float | None) -> float | None:
        if value not in (None, 0, 0.0):
            raise ValueError("not supported by polyalign (only 0)")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one prompt")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported by polyalign")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def limit(self) -> int | None:
        return self.max_tokens


def chat_prompt(messages: list[Message]) -> str:
    """The one user turn a policy reads for a conversation. The policy's experts bring their own system prompts
    (personas), so the conversation is the user's text: one user message is its content; system/developer text
    comes first; an earlier exchange is written out as a transcript (``User: ...`` / ``Assistant: ...``)."""
    system = [m.text for m in messages if m.role in ("system", "developer")]
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be the user's: it is what the assistant answers", "messages")
    if len(turns) == 1:
        body = turns[0].text
    else:
        body = "\n\n".join(f"{'User' if m.role == 'user' else 'Assistant'}: {m.text}" for m in turns)
    return "\n\n".join([*system, body])
