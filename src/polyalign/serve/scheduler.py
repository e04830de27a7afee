"""Continuous batching: one thread owns a running :class:`~polyalign.decode.DecodeSession` and steps a changing
set of rows.

Between two steps the scheduler drops the rows of requests that were cancelled (a client that went away), admits
waiting requests (``policy.join``: their rows join at the next step, each with its own weights, alpha, length,
stops and sampling options) while the batch has room, then steps every live row once. A finished row leaves the
batch at once. Nothing a client does blocks the loop: results go to each request's ``sink``, which only hands
them over (to an asyncio queue in the server), so a slow reader never holds up the others.

The session is the same one ``policy.generate`` and ``policy.stream`` decode with: the server adds no decoding
loop of its own, only the admission and the bookkeeping of which row belongs to which request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from polyalign.decode import DecodeSession
from polyalign.errors import PolyalignError
from polyalign.interface import GenerationConfig
from polyalign.serve.schemas import ApiError

log = logging.getLogger("polyalign.serve")


@dataclass
class Admitted:
    """The request's rows joined the batch; ``prompt_tokens`` per prompt (what the policy reads)."""

    prompt_tokens: list[int]


@dataclass
class Tokens:
    """One step's new text per choice: ``(choice, text, finish_reason)`` (``finish_reason`` None: more to come)."""

    events: list[tuple[int, str, str | None]]


@dataclass
class Failed:
    error: ApiError


Update = Admitted | Tokens | Failed


@dataclass(eq=False)
class Job:
    """One request: its prompts (one per choice group), one weight vector per prompt, alpha and decoding options.
    Choice ``i`` of the request is row ``i`` of what it adds (prompt ``i // config.n``)."""

    prompts: list[str]
    weights: list[list[float]]
    alpha: float | None
    config: GenerationConfig
    sink: Callable[[Update], None]
    cancelled: bool = False
    rows: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.prompts) * self.config.n


class Scheduler:
    """Owns the running session of one policy (an :class:`~polyalign.policies.base.EnginePolicy`)."""

    def __init__(self, policy, max_rows: int = 32, max_queue: int = 64, name: str = "policy") -> None:
        self.policy, self.max_rows, self.max_queue, self.name = policy, max_rows, max_queue, name
        self.session: DecodeSession | None = None
        self._pending: deque[Job] = deque()
        self._live: dict[int, tuple[Job, int]] = {}  # session row -> (request, choice)
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"polyalign-scheduler-{name}", daemon=True)
        self.steps = 0

    # -- what the server calls (any thread) ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def load(self) -> dict[str, int]:
        """Waiting requests and live rows (for readiness)."""
        return {"waiting": len(self._pending), "rows": len(self._live)}

    def submit(self, job: Job) -> None:
        """Queue a request; 503 while shutting down, 429 when the queue is full."""
        with self._cond:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if len(self._pending) >= self.max_queue:
                raise ApiError(429, f"too many requests waiting ({self.max_queue}); retry later",
                               code="queue_full")
            self._pending.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Forget a request (its client went away): its rows leave the batch before the next step."""
        job.cancelled = True
        with self._cond:
            self._cond.notify()

    def stop(self, grace: float = 10.0) -> None:
        """Admit nothing new; let what runs (and waits) finish for ``grace`` seconds, then end it with a 503."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + grace
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(grace + 5.0)

    # -- the loop (the scheduler's thread) -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._live and not self._stopping:
                    self._cond.wait()
                if self._stopping and (not self._pending and not self._live or time.monotonic() > self._deadline):
                    break
                admit = self._take()
            self._drop_cancelled()
            for job in admit:
                self._admit(job)
            if self._live:
                self._step()
        self._fail_all(ApiError(503, "the server shut down before this request finished",
                                code="shutting_down"))

    def _take(self) -> list[Job]:
        """Waiting requests that fit in the batch, first come first served (one too big for it runs alone)."""
        admit, rows = [], len(self._live)
        while self._pending:
            job = self._pending[0]
            if job.cancelled:
                self._pending.popleft()
                continue
            if rows and rows + job.size > self.max_rows:
                break
            admit.append(self._pending.popleft())
            rows += job.size
        return admit

    def _drop_cancelled(self) -> None:
        gone = [row for row, (job, _) in self._live.items() if job.cancelled]
        if not gone:
            return
        self.session.remove(gone)
        for row in gone:
            del self._live[row]
        if self.session.done:
            self.session = None

    def _admit(self, job: Job) -> None:
        try:
            if self.session is None:
                self.session = self.policy.start(job.prompts, job.weights, job.alpha, job.config)
                rows = list(range(len(self.session.drafts)))
            else:
                rows = self.policy.join(self.session, job.prompts, job.weights, job.alpha, job.config.seed,
                                        job.config)
        except PolyalignError as exc:
            job.sink(Failed(ApiError(400, str(exc), code="invalid_request")))
            return
        except Exception:  # noqa: BLE001 - a bug: log it, answer 500, keep serving the others
            log.exception("admitting a request failed")
            job.sink(Failed(ApiError(500, "internal error while starting this request")))
            return
        job.rows = rows
        for choice, row in enumerate(rows):
            self._live[row] = (job, choice)
        job.sink(Admitted([len(self.session.prompt_ids[r]) for r in rows[:: job.config.n]]))

    def _step(self) -> None:
        try:
            events = self.session.step()
        except Exception:  # noqa: BLE001 - the batch is lost: every live request gets a clean 500
            log.exception("a decoding step failed")
            self.session = None
            self._fail_live(ApiError(500, "internal error while decoding"))
            return
        self.steps += 1
        per_job: dict[Job, list[tuple[int, str, str | None]]] = {}
        for ev in events:
            job, choice = self._live[ev.index]
            per_job.setdefault(job, []).append((choice, ev.text, ev.finish_reason))
            if ev.finish_reason is not None:
                del self._live[ev.index]
        for job, items in per_job.items():
            if not job.cancelled:
                job.sink(Tokens(items))
        if self.session.done:
            self.session = None

    def _fail_live(self, error: ApiError) -> None:
        for job in {job for job, _ in self._live.values()}:
            job.sink(Failed(error))
        self._live.clear()

    def _fail_all(self, error: ApiError) -> None:
        self._fail_live(error)
        with self._cond:
            pending, self._pending = list(self._pending), deque()
        for job in pending:
            job.sink(Failed(error))
        self.session = None
