"""The HTTP API: OpenAI's ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` over steerable policies,
with per-request ``objective_weights`` and ``alpha``, server-sent-event streaming, health and readiness, and the
web playground at ``/``.

Every way a request can fail is an OpenAI error body (``{"error": {"message", "type", "param", "code"}}``) with a
4xx status (5xx for the server's own faults), never a traceback. A request names only a policy the server
loaded (``model``), never a file, a model path or a module.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from polyalign.errors import ConfigError, PolyalignError
from polyalign.interface import GenerationConfig
from polyalign.serve.scheduler import Admitted, Failed, Job, Scheduler, Tokens
from polyalign.serve.schemas import ApiError, ChatRequest, CompletionRequest, Sampling, chat_prompt, validation_error
from polyalign.serve.weighting import describe_weights, request_weights, spread
from polyalign.weights import check_weights

log = logging.getLogger("polyalign.serve")
STATIC = files("polyalign.serve") / "static"
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Limits:
    """What one request may ask for; past it the answer is 400 (413 for the body, 429 for the queue)."""

    max_prompt_tokens: int = 2048
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_n: int = 8
    max_prompts: int = 16
    max_queue: int = 64
    max_rows: int = 32
    max_body_bytes: int = 1 << 20
    shutdown_grace: float = 10.0


@dataclass
class Served:
    """One policy behind the API: its name (the ``model`` of requests), the policy and its scheduler."""

    name: str
    policy: Any
    scheduler: Scheduler
    description: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def objectives(self) -> list[str]:
        return list(self.policy.objectives)

    @property
    def alpha(self) -> dict[str, Any] | None:
        """The valid alpha range, or None when the policy takes no alpha (probed once: the head refuses it)."""
        if not hasattr(self, "_alpha"):
            self._alpha = _alpha_range(self.policy)
        return self._alpha

    def card(self) -> dict[str, Any]:
        """The ``/v1/models`` entry: OpenAI's fields plus what steering needs."""
        domain = self.policy.weight_domain
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "polyalign",
                "description": self.description, "steerable": bool(getattr(self.policy, "steerable", True)),
                "objectives": describe_weights(self.objectives, domain),
                "weight_domain": {"kind": domain.kind, "description": domain.description},
                "alpha": self.alpha}


def _alpha_range(policy) -> dict[str, Any] | None:
    import torch

    w = torch.full((1, len(policy.objectives)), 1.0 / len(policy.objectives), dtype=torch.float64)
    try:
        policy.head_weights(w, 0.5)
    except PolyalignError:
        return None
    return {"min": float(getattr(policy, "alpha_min", 0.0)), "max": 1.0, "default": None,
            "meaning": policy.alpha_meaning}


def check_servable(policy, name: str) -> None:
    """Refuse, at start-up, a policy the scheduler cannot batch (it needs polyalign's decode sessions)."""
    if not all(callable(getattr(policy, attr, None)) for attr in ("start", "join", "head_weights")):
        raise ConfigError(f"policy {name!r} ({type(policy).__name__}) is not decoded by polyalign's engine (it has no "
                          "start/join sessions), so the server cannot batch it; serve an EnginePolicy")


def create_app(served: list[Served], limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    """The FastAPI app over ``served`` policies; the schedulers start and stop with the app's lifespan."""
    limits = limits or Limits()
    by_name = {s.name: s for s in served}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for s in served:
            s.scheduler.start()
        yield
        await asyncio.gather(*(asyncio.to_thread(s.scheduler.stop, limits.shutdown_grace) for s in served))

    app = FastAPI(title="polyalign", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.limits = by_name, limits
    _error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        states = {s.name: {"ready": s.scheduler.alive, **s.scheduler.load} for s in served}
        ok = all(v["ready"] for v in states.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "policies": states}, 200 if ok else 503)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [s.card() for s in served]}

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        return _served(by_name, name).card()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        authorize(request)
        body = await _parse(request, ChatRequest, limits)
        return await _complete(request, by_name, limits, body, [chat_prompt(body.messages)], chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = await _parse(request, CompletionRequest, limits)
        if len(body.prompts) > limits.max_prompts:
            raise ApiError(400, f"at most {limits.max_prompts} prompts per request, got {len(body.prompts)}",
                           "prompt", "too_many_prompts")
        return await _complete(request, by_name, limits, body, body.prompts, chat=False)

    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404
                                     else None).body(), exc.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(ApiError(500, "internal server error").body(), 500)


def _served(by_name: dict[str, Served], name: str) -> Served:
    if name not in by_name:
        raise ApiError(404, f"the model {name!r} does not exist; this server serves {sorted(by_name)}", "model",
                       "model_not_found")
    return by_name[name]


async def _parse(request: Request, schema: type[Sampling], limits: Limits) -> Any:
    """The body, at most ``max_body_bytes`` (413), as JSON (400) checked by ``schema`` (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise _too_large(limits)
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (weights and options must be finite)")


def _too_large(limits: Limits) -> ApiError:
    return ApiError(413, f"the request body is larger than {limits.max_body_bytes} bytes", code="request_too_large")


@dataclass
class Plan:
    """What a request decodes: the job's prompts and weights, and each choice's weights (its label)."""

    job_prompts: list[str]
    job_weights: list[list[float]]
    choice_weights: list[list[float]]
    config: GenerationConfig
    rows_per_prompt: int
    """Job rows per prompt that share its prompt tokens: n with spread (one row per weighting), else 1."""


def plan(served: Served, limits: Limits, body: Sampling, prompts: list[str]) -> Plan:
    """Check a request against the limits and the policy, and lay out its rows (spread or not)."""
    policy = served.policy
    options = _options(body, _max_tokens(body, limits))
    _check_prompts(policy, prompts, limits)
    _check_alpha(served, body.alpha)
    weights = request_weights(body.objective_weights, served.objectives, policy.weight_domain)
    if body.spread:
        if body.n < 2:
            raise ApiError(400, "spread needs n of at least 2: it decodes the n choices at n weightings", "spread")
        if not getattr(policy, "steerable", True):
            raise ApiError(400, f"{served.name} is not steered by weights, so there is nothing to spread", "spread")
        choices = spread(weights, body.n, body.spread_radius, policy.weight_domain)
        job_prompts, job_weights, n = [p for p in prompts for _ in choices], choices * len(prompts), 1
    else:
        choices, job_prompts, job_weights, n = [weights], prompts, [weights] * len(prompts), body.n
    try:
        check_weights(job_weights, len(job_prompts), served.objectives, policy.weight_domain)
        config = GenerationConfig(n=n, **options)
    except PolyalignError as exc:
        raise ApiError(400, str(exc), "objective_weights" if "weight" in str(exc) else None) from None
    per_choice = [choices[k % len(choices)] for k in range(len(prompts) * body.n)]
    return Plan(job_prompts, job_weights, per_choice, config, body.n if body.spread else 1)


def _max_tokens(body: Sampling, limits: Limits) -> int:
    if body.n > limits.max_n:
        raise ApiError(400, f"n must be at most {limits.max_n}, got {body.n}", "n", "too_many_choices")
    max_tokens = body.limit if body.limit is not None else min(limits.default_max_tokens, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens must be at most {limits.max_tokens}, got {max_tokens}", "max_tokens",
                       "max_tokens_too_large")
    return max_tokens


def _check_prompts(policy, prompts: list[str], limits: Limits) -> None:
    """The user's text within ``max_prompt_tokens`` (the model's own context is checked when the rows join)."""
    for i, prompt in enumerate(prompts):
        count = len(policy.bank.tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        if count > limits.max_prompt_tokens:
            raise ApiError(400, f"prompt {i} is {count} tokens long; this server takes at most "
                           f"{limits.max_prompt_tokens}", "messages", "context_length_exceeded")


def _check_alpha(served: Served, alpha: float | None) -> None:
    if alpha is None:
        return
    if served.alpha is None:
        raise ApiError(400, f"{served.name} takes no alpha ({served.policy.alpha_meaning})", "alpha",
                       "alpha_not_supported")
    if alpha < served.alpha["min"]:
        raise ApiError(400, f"alpha must lie in [{served.alpha['min']}, 1], got {alpha}", "alpha", "invalid_value")


def _options(body: Sampling, max_tokens: int) -> dict[str, Any]:
    """The request's decoding options: temperature 0 is greedy (OpenAI's default, 1, samples)."""
    sample = body.temperature is None or body.temperature > 0
    return {"max_new_tokens": max_tokens, "strategy": "sample" if sample else "greedy",
            "temperature": body.temperature if sample and body.temperature else 1.0, "top_p": body.top_p,
            "stop": body.stops, "seed": body.seed}


class _Bridge:
    """Hands the scheduler thread's updates to the request's event loop (never blocks the scheduler)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self, update) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, update)
        except RuntimeError:  # the loop is closed: the server is gone, nobody is listening
            pass


async def _complete(request: Request, by_name: dict[str, Served], limits: Limits, body: Sampling,
                    prompts: list[str], chat: bool):
    served = _served(by_name, body.model)
    layout = plan(served, limits, body, prompts)
    bridge = _Bridge()
    job = Job(layout.job_prompts, layout.job_weights, body.alpha, layout.config, bridge)
    served.scheduler.submit(job)
    reply = _Reply(served.name, chat, served.objectives, layout, body.alpha)
    if body.stream:
        await _admitted(served.scheduler, job, bridge, reply)  # a refusal at admission is still a 4xx status
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(_sse(served.scheduler, job, bridge, reply, include_usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _collect(request, served.scheduler, job, bridge, reply)


async def _admitted(scheduler: Scheduler, job: Job, bridge: _Bridge, reply: _Reply) -> None:
    """Wait until the request's rows joined the batch (its prompt was read), or raise why it could not."""
    try:
        update = await bridge.queue.get()
    except asyncio.CancelledError:
        scheduler.cancel(job)
        raise
    if isinstance(update, Failed):
        raise update.error
    if isinstance(update, Admitted):
        reply.admitted(update.prompt_tokens)
    else:  # cannot happen: tokens come after admission; keep it for the stream
        bridge.queue.put_nowait(update)


class _Reply:
    """Builds OpenAI's completion objects and chunks for one request."""

    def __init__(self, model: str, chat: bool, objectives: list[str], layout: Plan, alpha: float | None) -> None:
        self.model, self.chat, self.objectives, self.alpha = model, chat, objectives, alpha
        self.choices = len(layout.choice_weights)
        self.labels = [dict(zip(objectives, w, strict=True)) for w in layout.choice_weights]
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.texts, self.finish = [""] * self.choices, [None] * self.choices
        self.tokens, self.prompt_tokens, self.rows_per_prompt = [0] * self.choices, 0, layout.rows_per_prompt

    def admitted(self, prompt_tokens: list[int]) -> None:
        self.prompt_tokens = sum(prompt_tokens[:: self.rows_per_prompt])

    @property
    def object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def usage(self) -> dict[str, int]:
        done = sum(self.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}

    def add(self, events: list[tuple[int, str, str | None]]) -> None:
        for choice, text, reason in events:
            self.texts[choice] += text
            self.tokens[choice] += 1
            if reason is not None:
                self.finish[choice] = FINISH[reason]

    @property
    def done(self) -> bool:
        return all(f is not None for f in self.finish)

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def final(self) -> dict[str, Any]:
        choices = []
        for k in range(self.choices):
            choice: dict[str, Any] = {"index": k, "finish_reason": self.finish[k], "objective_weights": self.labels[k]}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": self.texts[k]}
            else:
                choice.update(text=self.texts[k], logprobs=None)
            choices.append(choice)
        return {**self._head(self.object), "choices": choices, "usage": self.usage(), "alpha": self.alpha}

    def chunk(self, choice: int, text: str | None, reason: str | None, first: bool) -> dict[str, Any]:
        c: dict[str, Any] = {"index": choice, "finish_reason": reason}
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text:
                delta["content"] = text
            c["delta"] = delta
        else:
            c.update(text=text or "", logprobs=None)
        if first:
            c["objective_weights"] = self.labels[choice]
        return {**self._head(f"{self.object}.chunk" if self.chat else self.object), "choices": [c]}

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._head(f"{self.object}.chunk" if self.chat else self.object), "choices": [],
                "usage": self.usage()}


async def _collect(request: Request, scheduler: Scheduler, job: Job, bridge: _Bridge, reply: _Reply) -> JSONResponse:
    """Wait for the whole answer; a client that disconnects meanwhile frees its rows."""
    checked = time.monotonic()
    try:
        while not reply.done:
            try:
                update = await asyncio.wait_for(bridge.queue.get(), timeout=0.25)
            except asyncio.TimeoutError:
                update = None
            if time.monotonic() - checked > 0.25:  # tokens may arrive faster than that: look by the clock
                checked = time.monotonic()
                if await request.is_disconnected():
                    scheduler.cancel(job)
                    return JSONResponse(ApiError(499, "client disconnected").body(), 499)
            if update is None:
                continue
            if isinstance(update, Failed):
                raise update.error
            if isinstance(update, Admitted):
                reply.admitted(update.prompt_tokens)
            elif isinstance(update, Tokens):
                reply.add(update.events)
    except asyncio.CancelledError:
        scheduler.cancel(job)
        raise
    return JSONResponse(reply.final())


def _event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, allow_nan=False)}\n\n"


async def _sse(scheduler: Scheduler, job: Job, bridge: _Bridge, reply: _Reply, include_usage: bool
               ) -> AsyncIterator[str]:
    """OpenAI's chunk stream: one chunk per choice per step, a last chunk per choice with its finish_reason, the
    usage chunk when asked, then ``[DONE]``. Leaving early (the client went away) cancels the request."""
    started: set[int] = set()
    try:
        while not reply.done:
            update = await bridge.queue.get()
            if isinstance(update, Failed):
                yield _event(update.error.body())
                break
            if isinstance(update, Admitted):
                reply.admitted(update.prompt_tokens)
                continue
            reply.add(update.events)
            for choice, text, reason in update.events:
                first = choice not in started
                started.add(choice)
                if text or first:
                    yield _event(reply.chunk(choice, text, None, first))
                if reason is not None:
                    yield _event(reply.chunk(choice, None, FINISH[reason], False))
        else:
            if include_usage:
                yield _event(reply.usage_chunk())
        yield _event("[DONE]")
    finally:
        if not reply.done:
            scheduler.cancel(job)


__all__ = ["Limits", "Served", "check_servable", "create_app", "plan"]
