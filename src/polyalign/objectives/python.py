"""``python:package.module:function``: any Python callable as an objective.

Batched (default): ``function(prompts, responses)`` or ``function(prompts, responses, references)`` returns
N numbers. With ``batched=false``: ``function(prompt, response[, reference])`` returns one number.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch

from polyalign.errors import ObjectiveError
from polyalign.objectives.base import check_scores


def import_callable(target: str, what: str = "python objective") -> Callable:
    """``package.module:attribute`` (or ``package.module.attribute``) -> the callable it names.

    ``what`` names the caller's setting in the error messages (e.g. ``method 'x' factory``).
    """
    module_name, colon, attribute = target.partition(":")
    if not colon:
        module_name, _, attribute = target.rpartition(".")
    if not module_name or not attribute:
        raise ObjectiveError(f"{what} {target!r} must be MODULE:FUNCTION, e.g. mypkg.rewards:politeness")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ObjectiveError(f"{what} {target!r}: cannot import {module_name!r} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ObjectiveError(f"{what} {target!r}: {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ObjectiveError(f"{what} {target!r} is a {type(obj).__name__}, not a callable")
    return obj


def _takes_reference(function: Callable, given: int) -> bool:
    """Whether ``function`` accepts one more positional argument than ``given``."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return False
    params = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > given


class PythonObjective:
    """A Python callable by import path, e.g. python:mypkg.rewards:politeness."""

    def __init__(self, function: str, higher_is_better: bool = True, batched: bool = True):
        self.target, self.function = function, import_callable(function)
        self.name = function.replace(":", ".").rsplit(".", 1)[-1]
        self.higher_is_better, self.batched = higher_is_better, batched
        self.with_reference = _takes_reference(self.function, 2)

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        if self.batched:
            extra = (references,) if self.with_reference else ()
            raw = self.function(list(prompts), list(responses), *extra)
        else:
            refs = references if references is not None else [None] * len(responses)
            raw = [self.function(p, r, ref) if self.with_reference else self.function(p, r)
                   for p, r, ref in zip(prompts, responses, refs, strict=True)]
        return check_scores(self.name, raw, len(responses))
