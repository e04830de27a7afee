"""A live polyalign server on a tiny random model, in a thread, for the serving tests (real sockets, real uvicorn)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from polyalign.policies import MOD
from polyalign.serve import Limits, Scheduler, Served
from polyalign.serve.server import bind, uvicorn_server

PERSONAS = {"terse": "be terse and brief.", "warm": "be warm, kind and enthusiastic!"}
KEY = "test-key"


def tiny_policy(model_dir) -> MOD:
    return MOD.from_personas(PERSONAS, model=str(model_dir))


class SlowScheduler(Scheduler):
    """Steps no faster than one per ``delay`` seconds: a long request stays long next to a short one on a tiny
    model that decodes in microseconds (what is tested is order and equality, not time)."""

    delay = 0.01

    def _step(self) -> None:
        time.sleep(self.delay)
        super()._step()


class GatedScheduler(Scheduler):
    """Admits requests but steps only while ``gate`` is set: requests pile up in the queue deterministically."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def _step(self) -> None:
        while not self.gate.wait(0.05):
            if self._stopping:
                break
        super()._step()


@dataclass
class Live:
    url: str
    served: list[Served]
    server: object = None

    @property
    def api(self) -> str:
        return f"{self.url}/v1"


@contextlib.contextmanager
def live_server(served: list[Served], limits: Limits, api_key: str | None = KEY) -> Iterator[Live]:
    """Run the app on 127.0.0.1 at a free port until the block ends (then a graceful shutdown); ``Live.server``
    is uvicorn's server (``should_exit`` stops it)."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(served, limits, api_key, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", served, server)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
