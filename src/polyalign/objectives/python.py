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
from polyalign.objectives.base import RowError, check_scores


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


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class PythonObjective:
    """A Python callable by import path, e.g. python:mypkg.rewards:politeness.

    Whatever the callable does wrong (a signature that does not take the arguments, an exception, an output
    of the wrong type or shape) is an :class:`ObjectiveError` naming the spec and the function, with the
    user's exception in one line and chained as the cause.
    """

    def __init__(self, function: str, higher_is_better: bool = True, batched: bool = True):
        self.target, self.function = function, import_callable(function)
        self.name = function.replace(":", ".").rsplit(".", 1)[-1]
        self.higher_is_better, self.batched = higher_is_better, batched
        self.with_reference = _takes_reference(self.function, 2)
        self._check_signature()

    @property
    def source(self) -> str:
        """Where the scores come from, for error messages: the spec and the function."""
        return f"spec {getattr(self, 'spec', None) or 'python:' + self.target}, function {self.target}"

    def _check_signature(self) -> None:
        try:
            signature = inspect.signature(self.function)
        except (TypeError, ValueError):
            return  # builtins without a signature: their call errors are caught in score()
        args = "(prompts, responses[, references])" if self.batched else "(prompt, response[, reference])"
        for given in (2, 3):
            try:
                signature.bind(*[""] * given)
                return
            except TypeError as exc:
                problem = str(exc)
        raise ObjectiveError(f"objective {self.name!r} (spec python:{self.target}): function {self.target}{signature} "
                             f"cannot be called with {args}: {problem}; change its parameters"
                             + ("" if self.batched else " (batched=false: one row at a time)"))

    def _call(self, args: tuple, row: int | None = None) -> object:
        try:
            return self.function(*args)
        except Exception as exc:
            message = f"objective {self.name!r} ({self.source}) raised {_first_line(exc)}"
            if row is None:
                raise ObjectiveError(message) from exc
            escaped = message.replace("{", "{{").replace("}", "}}")
            raise RowError(f"{escaped} on row {{row}}", row) from exc

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        if self.batched:
            extra = (references,) if self.with_reference else ()
            raw = self._call((list(prompts), list(responses), *extra))
        else:
            refs = references if references is not None else [None] * len(responses)
            raw = [self._call((p, r, ref) if self.with_reference else (p, r), row)
                   for row, (p, r, ref) in enumerate(zip(prompts, responses, refs, strict=True))]
        return check_scores(self.name, raw, len(responses), self.source)
