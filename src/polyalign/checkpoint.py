"""Checkpoints: one directory layout for every trained policy, written atomically, read without pickles.

A checkpoint is a directory holding

* ``policy.json``: what the policy is (``kind``, base model, selector, objectives, f_mix, alpha_min, ...) and a
  fingerprint of the base model's weights, so that loading onto another base model is refused;
* ``policy.safetensors``: the trainable weights only (the frozen base is re-read from its own source);
* for training runs, ``trainer/``: optimizer, scheduler and RNG state (:mod:`polyalign.training.run`);
* ``COMPLETE``: written last; a directory without it is an interrupted write and never counts.

:func:`load` returns a ready :class:`~polyalign.interface.SteerablePolicy` for any kind registered with
:func:`register_loader`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from polyalign.errors import ModelLoadError

POLICY_FILE = "policy.json"
WEIGHTS_FILE = "policy.safetensors"
COMPLETE = "COMPLETE"
CHECKPOINTS = "checkpoints"  # a run folder's checkpoints: CHECKPOINTS/step-000050, ...

_LOADERS: dict[str, Callable[..., Any]] = {}


def register_loader(kind: str, loader: Callable[..., Any]) -> None:
    """``loader(path, meta, **options)`` builds the policy of checkpoints whose ``policy.json`` says ``kind``."""
    _LOADERS[kind] = loader


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary sibling, then mark it complete and rename it over
    ``target``. A crash leaves ``target`` as it was (and a ``.tmp-`` sibling that the next write removes)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / COMPLETE).write_text("ok\n")
        _fsync_dir(tmp)
        old = target.parent / f".old-{target.name}-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return (path / COMPLETE).is_file() and (path / POLICY_FILE).is_file()


def read_meta(path: str | Path) -> dict[str, Any]:
    """``policy.json`` of a complete checkpoint, or a :class:`ModelLoadError` saying what is wrong with it."""
    from polyalign.files import check_input_file, read_json

    path = Path(path).expanduser()
    if not path.is_dir():
        check_input_file(path, "checkpoint")  # names a missing path or a parent that is a file
        raise ModelLoadError(f"checkpoint {str(path)!r} is a file; give the checkpoint's directory")
    if not (path / POLICY_FILE).is_file():
        raise ModelLoadError(f"{str(path)!r} is not a polyalign checkpoint: it has no {POLICY_FILE}")
    if not (path / COMPLETE).is_file():
        raise ModelLoadError(f"checkpoint {str(path)!r} is incomplete (no {COMPLETE} marker: its write was "
                             "interrupted); use an earlier checkpoint")
    meta = read_json(path / POLICY_FILE, "checkpoint policy file")
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str):
        raise ModelLoadError(f"{path / POLICY_FILE} is not a polyalign policy file (no 'kind')")
    return meta


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / POLICY_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file; a corrupt or truncated file is one :class:`ModelLoadError`."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelLoadError(f"{what} file {str(path)!r} is missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types, and OSError
        raise ModelLoadError(f"{what} file {str(path)!r} is corrupt or truncated ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); use another checkpoint"
                             ) from None


def fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Cheap identity of a model's weights: architecture numbers and order-weighted float64 sums."""
    total, checksum, count = 0.0, 0.0, 0
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.state_dict().items())):
            s = float(p.double().sum())
            total += s
            checksum += s * ((i % 97) + 1)
            count += p.numel()
    config = getattr(model, "config", None)
    arch = {k: getattr(config, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")}
    return {"parameters": count, "sum": total, "checksum": checksum, **arch}


def check_fingerprint(saved: dict[str, Any], model: torch.nn.Module, where: str, base: str) -> None:
    """Refuse a checkpoint trained on another base model than ``model``."""
    now = fingerprint(model)
    for key in ("parameters", "model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if saved.get(key) != now.get(key):
            raise ModelLoadError(f"checkpoint {where} was trained on another base model than {base!r} ({key}: "
                                 f"{saved.get(key)} in the checkpoint, {now.get(key)} here)")
    for key in ("sum", "checksum"):
        a, b = float(saved.get(key, float("nan"))), float(now[key])
        if not abs(a - b) <= 1e-3 * max(1.0, abs(a), abs(b)):  # loose: bf16 vs fp32 loads of one base
            raise ModelLoadError(f"checkpoint {where} was trained on other weights than {base!r} (same shapes, "
                                 "different values): load it with the base model it was trained from")


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder (``checkpoints/step-N``), or None."""
    done = sorted(p for p in (Path(run) / CHECKPOINTS).glob("step-*") if is_complete(p))
    return done[-1] if done else None


def resolve(path: str | Path) -> Path:
    """A checkpoint directory, or a run folder (then its newest complete checkpoint)."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / POLICY_FILE).exists() and (path / CHECKPOINTS).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ModelLoadError(f"run folder {str(path)!r} holds no complete checkpoint yet")
        return latest
    return path


def load(path: str | Path, **options: Any):
    """A ready :class:`~polyalign.interface.SteerablePolicy` from a checkpoint directory or a run folder (its newest
    checkpoint; ``options`` such as
    ``device``, ``dtype``, ``model`` (another location of the same base) go to the kind's loader)."""
    path = resolve(path)
    meta = read_meta(path)
    _register_builtins()
    loader = _LOADERS.get(meta["kind"])
    if loader is None:
        raise ModelLoadError(f"checkpoint {str(path)!r} holds a {meta['kind']!r} policy, which this polyalign "
                             f"cannot load (known: {', '.join(sorted(_LOADERS))})")
    return loader(Path(path).expanduser(), meta, **options)


def _register_builtins() -> None:
    import polyalign.policies.clp  # noqa: F401 - registers 'clp'
    import polyalign.policies.morlhf  # noqa: F401
    import polyalign.policies.prompted  # noqa: F401
    import polyalign.policies.soup  # noqa: F401
    import polyalign.training.fdpo_recipe  # noqa: F401 - registers 'fdpo_expert'
