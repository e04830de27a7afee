"""``polyalign serve``: the OpenAI-compatible API and the web playground over one or more policies."""

from __future__ import annotations

from typing import Annotated

import typer

from polyalign.errors import ConfigError


def serve(
    policy: Annotated[list[str], typer.Option(
        "--policy", "-p", help="NAME=PATH or PATH: a policy YAML file or a trained checkpoint folder (repeatable; "
                               "default: the embedded model with persona experts, named 'personas').")] = [],  # noqa: B006
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps the server on this machine.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="POLYALIGN_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on /v1 (also POLYALIGN_API_KEY).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=32768, help="Largest max_tokens a request may ask.")] = 1024,
    default_max_tokens: Annotated[int, typer.Option(min=1, max=32768,
                                                    help="max_tokens of a request that gives none.")] = 256,
    max_prompt_tokens: Annotated[int, typer.Option(min=1, help="Longest prompt, in tokens.")] = 2048,
    max_n: Annotated[int, typer.Option(min=1, max=64, help="Largest n (choices per prompt).")] = 8,
    max_rows: Annotated[int, typer.Option(min=1, help="Rows decoded together in one batch.")] = 32,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests waiting for the batch before 429.")] = 64,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body before 413.")] = 1 << 20,
    shutdown_grace: Annotated[float, typer.Option(min=0.0, help="Seconds in-flight requests get at shutdown.")
                              ] = 10.0,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level (debug also logs each request).")] = "info",
) -> None:
    """Serve policies over an OpenAI-compatible API (objective_weights and alpha per request) with a playground."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("serving needs the serve extra: pip install 'polyalign[serve]'") from None
    from polyalign.serve.app import Limits
    from polyalign.serve.server import bind, build_served, check_names, run

    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key / POLYALIGN_API_KEY is empty: give a key or leave it unset")
    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ConfigError(f"--log-level must be one of critical, error, warning, info, debug, got {log_level!r}")
    limits = Limits(max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens,
                    default_max_tokens=min(default_max_tokens, max_tokens), max_n=max_n, max_queue=max_queue,
                    max_rows=max_rows, max_body_bytes=max_body_bytes, shutdown_grace=shutdown_grace)
    check_names(policy)
    sock = bind(host, port)  # a port in use fails now, not after the models load
    try:
        served = build_served(policy, limits)
        run(served, sock, limits, api_key, log_level)
    finally:
        sock.close()
