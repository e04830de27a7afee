"""Starting a server: which policies (the default persona MOD, policy YAML files, trained checkpoints), the
socket (bound before any model loads, so a port in use fails at once), and uvicorn with a graceful shutdown."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from pathlib import Path

from polyalign.errors import ConfigError
from polyalign.serve.app import Limits, Served, check_servable, create_app
from polyalign.serve.scheduler import Scheduler

log = logging.getLogger("polyalign.serve")
DEFAULT_NAME = "personas"


def default_policy():
    """The embedded model with the demo's persona experts (``polyalign demo``): concise vs warm."""
    from polyalign.demo import PERSONAS
    from polyalign.models import DEFAULT_MODEL
    from polyalign.policies import MOD

    return MOD.from_personas(PERSONAS, model=DEFAULT_MODEL)


def parse_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (named after the file or folder) -> (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).stem or Path(spec).name, spec
    if not name or not path:
        raise ConfigError(f"--policy expects PATH or NAME=PATH, got {spec!r}")
    return name, Path(path).expanduser()


def load_policy_spec(path: Path):
    """A policy YAML file (any kind of ``polyalign.policies.config``) or a trained checkpoint folder."""
    if path.is_dir():
        from polyalign.checkpoint import load

        return load(path)
    if not path.exists():
        raise ConfigError(f"policy {str(path)!r} does not exist: give a policy YAML file or a checkpoint folder")
    from polyalign.policies.config import load_policy

    return load_policy(path).build()


def check_names(specs: list[str]) -> list[tuple[str, Path]]:
    """Parse every ``--policy`` before loading any (a typo fails before minutes of loading)."""
    parsed = [parse_spec(s) for s in specs]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"two policies share a name in {names}: name them with NAME=PATH")
    for _, path in parsed:
        if not path.exists():
            raise ConfigError(f"policy {str(path)!r} does not exist: give a policy YAML file or a checkpoint folder")
    return parsed


def build_served(specs: list[str], limits: Limits) -> list[Served]:
    """The policies to serve, each with its scheduler (not started)."""
    parsed = check_names(specs)
    if not parsed:
        items = [(DEFAULT_NAME, default_policy(), "MOD over the embedded model's persona experts (polyalign demo)")]
    else:
        items = [(name, load_policy_spec(path), str(path)) for name, path in parsed]
    served = []
    for name, policy, description in items:
        check_servable(policy, name)
        served.append(Served(name, policy, Scheduler(policy, limits.max_rows, limits.max_queue, name), description))
    return served


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); a port in use is a ConfigError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: stop what holds it or pick --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def describe(served: list[Served], address: str, api_key: bool) -> list[str]:
    """The start-up log: where, what, with which objectives."""
    lines = [f"polyalign serve on {address} (playground: {address}/ , API: {address}/v1)"]
    for s in served:
        alpha = f"; alpha in [{s.alpha['min']:g}, 1]" if s.alpha else ""
        lines.append(f"  policy {s.name!r}: {type(s.policy).__name__} ({s.description}); objectives "
                     f"{s.objectives}, weights: {s.policy.weight_domain.description}{alpha}")
    lines.append("  API key required" if api_key else "  no API key (bound to this host only unless --host says so)")
    return lines


def run(served: list[Served], sock: socket.socket, limits: Limits, api_key: str | None = None,
        log_level: str = "info") -> None:
    """Serve until interrupted; on SIGINT/SIGTERM in-flight requests get ``limits.shutdown_grace`` seconds."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    for line in describe(served, f"http://{shown}:{port}", api_key is not None):
        print(line, flush=True)
    uvicorn_server(served, limits, api_key, log_level).run(sockets=[sock])
    print("polyalign serve: stopped", flush=True)


def uvicorn_server(served: list[Served], limits: Limits, api_key: str | None = None, log_level: str = "info"):
    """uvicorn's server for the app, with two changes to its shutdown. First the schedulers drain: nothing new is
    admitted (503), what runs gets ``limits.shutdown_grace`` seconds, and what is left then ends with a clean 503
    error (a chunk, when streaming) instead of a cut connection; then uvicorn closes the connections. And a
    SIGINT/SIGTERM that stopped it so is a clean exit (status 0), not the signal raised again afterwards."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            await asyncio.gather(*(asyncio.to_thread(s.scheduler.stop, limits.shutdown_grace) for s in served))
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    config = uvicorn.Config(create_app(served, limits, api_key), log_level=log_level,
                            timeout_graceful_shutdown=int(limits.shutdown_grace) + 5, access_log=log_level == "debug")
    return Server(config)
