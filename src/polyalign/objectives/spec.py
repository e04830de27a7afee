"""Spec strings and the registry: ``KIND[:ARG][,KEY=VALUE...]`` -> an objective.

``sentiment``, ``length:unit=words,target=30``, ``hf:OpenAssistant/reward-model-deberta-v3-large-v2,label=0``,
``python:mypkg.rewards:politeness``. The optional first item without ``=`` is the factory's first parameter
(a model path, an import path). Values are validated against the factory's type hints by pydantic.
Every kind also takes ``name=`` (rename, e.g. to use two ``hf`` models), ``range=LOW..HIGH`` (normalise
linearly to [0, 1]) and ``clip=true`` (clamp the normalised score to [0, 1]).

Plugins add kinds with :func:`register` or the entry point group ``polyalign.objectives`` (name -> factory).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from polyalign.errors import ConfigError, ObjectiveError
from polyalign.objectives.base import Objective, ObjectiveSet

ENTRY_POINT_GROUP = "polyalign.objectives"
RESERVED = ("name", "range", "clip")
_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")
_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register(name: str, factory: Callable[..., Objective]) -> None:
    """Make ``factory`` available as spec kind ``name``; its keyword parameters become the spec's keys."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ObjectiveError(f"objective kind {name!r} must be a letter or _ followed by letters, digits, _ . -")
    if not callable(factory):
        raise ObjectiveError(f"factory for objective kind {name!r} is not callable")
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ObjectiveError(f"objective kind {name!r} is already registered; choose another name")
    _REGISTRY[name] = factory


def available() -> dict[str, str]:
    """Every known kind (built-ins, registered, entry points) -> its one-line description."""
    _load_builtins()
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            try:
                _register_entry_point(entry)
            except ObjectiveError:
                continue  # listed by _lookup's error when the user asks for it
    return {name: _describe(factory) for name, factory in sorted(_REGISTRY.items())}


def parameters(kind: str) -> list[str]:
    """The spec keys a kind takes, in order (its factory's parameters)."""
    return [p.name for p in _fields(_lookup(kind))]


def parse_spec(spec: str) -> Objective:
    """Build one objective from its spec; the result carries ``.spec``, its canonical spec."""
    kind, positional, params = split_spec(spec)
    factory = _lookup(kind)
    reserved = {key: params.pop(key) for key in RESERVED if key in params}
    objective = _call(kind, factory, positional, params)
    if not isinstance(objective, Objective):
        raise ObjectiveError(f"the factory for objective kind {kind!r} returned {type(objective).__name__}, "
                             "which lacks name, higher_is_better or score")
    if "name" in reserved:
        if not _NAME.match(reserved["name"]):
            raise ObjectiveError(f"objective name {reserved['name']!r} in spec {spec!r} must be a letter or _ "
                                 "followed by letters, digits, _ . -")
        objective.name = reserved["name"]
        params["name"] = reserved["name"]
    objective.spec = format_spec(kind, positional, params)
    if "range" in reserved:
        from polyalign.objectives.normalize import LinearRange, Normalized

        clip = reserved.get("clip", "false").lower()
        if clip not in ("true", "false"):
            raise ObjectiveError(f"clip={reserved['clip']} in spec {spec!r} must be true or false")
        try:
            return Normalized(objective, LinearRange.parse(reserved["range"], clip == "true"))
        except ConfigError as exc:
            raise ObjectiveError(f"objective spec {spec!r}: {exc}") from None
    if "clip" in reserved:
        raise ObjectiveError(f"clip= in spec {spec!r} only applies with range=LOW..HIGH")
    return objective


def build(specs: Sequence[str] | str) -> ObjectiveSet:
    """An :class:`ObjectiveSet` from specs: a list, or one string with specs separated by ``;`` or newlines."""
    if isinstance(specs, str):
        specs = [part for part in re.split(r"[;\n]", specs) if part.strip()]
    if not specs:
        raise ObjectiveError("no objectives given; e.g. 'sentiment' or 'length:target=30' (see `polyalign objectives`)")
    return ObjectiveSet([parse_spec(spec) for spec in specs])


def split_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``KIND[:ARG][,KEY=VALUE...]`` -> (kind, positional argument or None, {key: value})."""
    if not isinstance(spec, str) or not spec.strip():
        raise ObjectiveError(f"objective spec {spec!r} is empty; e.g. 'sentiment' or 'length:target=30'")
    kind, _, body = spec.strip().partition(":")
    kind = kind.strip()
    if "," in kind and not body:
        first, _, rest = kind.partition(",")
        raise ObjectiveError(f"objective spec {spec!r}: parameters follow a colon; write it as '{first}:{rest}'")
    if not _NAME.match(kind):
        raise ObjectiveError(f"objective spec {spec!r} does not start with a kind such as 'sentiment' or 'hf:'")
    positional, params = None, {}
    for i, item in enumerate(body.split(",") if body.strip() else []):
        key, eq, value = item.strip().partition("=")
        key = key.strip()
        if not eq and i == 0 and key:
            positional = key
        elif not eq or not key:
            raise ObjectiveError(f"{item.strip()!r} in objective spec {spec!r} is not KEY=VALUE")
        elif key in params:
            raise ObjectiveError(f"parameter {key!r} is given twice in objective spec {spec!r}")
        else:
            params[key] = value.strip()
    return kind, positional, params


def format_spec(kind: str, positional: str | None, params: Mapping[str, str]) -> str:
    """The inverse of :func:`split_spec`."""
    items = ([positional] if positional is not None else []) + [f"{key}={value}" for key, value in params.items()]
    return f"{kind}:{','.join(items)}" if items else kind


def add_params(spec: str, params: Mapping[str, str]) -> str:
    """``spec`` with more ``KEY=VALUE`` items appended."""
    kind, positional, old = split_spec(spec)
    return format_spec(kind, positional, {**old, **params})


def _load_builtins() -> None:
    import polyalign.objectives.builtins  # noqa: F401  (registers on import)


def _register_entry_point(entry: importlib.metadata.EntryPoint) -> None:
    try:
        factory = entry.load()
    except Exception as exc:  # a broken plugin must not hide the others
        raise ObjectiveError(f"plugin objective {entry.name!r} ({entry.value}) failed to load: {exc}") from None
    register(entry.name, factory)


def _lookup(kind: str) -> Callable[..., Objective]:
    _load_builtins()
    if kind not in _REGISTRY:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=kind):
            _register_entry_point(entry)
    if kind not in _REGISTRY:
        raise ObjectiveError(f"unknown objective {kind!r}; available: {', '.join(available())}")
    return _REGISTRY[kind]


def _describe(factory: Callable) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else getattr(factory, "__name__", "")


def _fields(factory: Callable) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p for p in inspect.signature(factory).parameters.values() if p.kind in kinds]


@functools.cache
def _params_model(factory: Callable) -> type[BaseModel]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target)
    fields = {
        p.name: (hints.get(p.name, Any), ... if p.default is inspect.Parameter.empty else p.default)
        for p in _fields(factory)
    }
    return create_model(f"{getattr(factory, '__name__', 'factory')}_params",
                        __config__=ConfigDict(extra="forbid"), **fields)


def _call(kind: str, factory: Callable, positional: str | None, params: dict[str, str]) -> Objective:
    fields = [p.name for p in _fields(factory)]
    if positional is not None:
        if not fields:
            raise ObjectiveError(f"objective {kind!r} takes no arguments, got {positional!r}")
        if fields[0] in params:
            raise ObjectiveError(f"objective {kind!r}: {fields[0]!r} is given twice (as {kind}:{positional} too)")
        params = {fields[0]: positional, **params}
    unknown = [key for key in params if key not in fields]
    if unknown:
        takes = f"its parameters are {', '.join(fields + list(RESERVED))}"
        raise ObjectiveError(f"objective {kind!r} has no parameter {unknown[0]!r}; {takes}")
    try:
        validated = _params_model(factory).model_validate(params)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        if error["type"] == "missing":
            raise ObjectiveError(f"objective {kind!r} needs parameter {key!r}, e.g. '{kind}:{key.upper()}'") from None
        raise ObjectiveError(f"objective {kind!r}: {key}={params.get(key)!r} is invalid: {error['msg']}") from None
    return factory(**{key: getattr(validated, key) for key in params})
