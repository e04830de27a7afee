"""Serving: an OpenAI-compatible HTTP API with per-request objective weights, continuous batching and a web
playground (``polyalign serve``).

- :mod:`polyalign.serve.app`: the FastAPI app (endpoints, limits, errors, streaming).
- :mod:`polyalign.serve.scheduler`: the thread that owns a running decode session and batches requests.
- :mod:`polyalign.serve.weighting`: ``objective_weights`` to weight vectors, ranges, the decision-support spread.
- :mod:`polyalign.serve.server`: loading the policies, binding the socket, uvicorn.
- ``static/``: the playground (plain HTML, CSS and JavaScript; no CDN).
"""

from polyalign.serve.app import Limits, Served, create_app
from polyalign.serve.scheduler import Scheduler

__all__ = ["Limits", "Scheduler", "Served", "create_app"]
