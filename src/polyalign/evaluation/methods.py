"""Methods from config: one registry, kind name -> builder. The evaluation loop never looks at the kind.

A builder takes the method's parameters from the config (plus the evaluated objective names) and returns
a :class:`Method`: a name, a :class:`~polyalign.interface.SteerablePolicy`, and whether it is a single
point (a plain model that ignores the weights is generated once, not once per weighting).
Plugins add kinds with :func:`register_method`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from polyalign.errors import ConfigError
from polyalign.interface import Generation, GenerationConfig, SteerablePolicy, WeightsLike

Builder = Callable[..., "Method"]
_BUILDERS: dict[str, Builder] = {}


@dataclass
class Method:
    """A named policy to evaluate."""

    name: str
    policy: SteerablePolicy
    single_point: bool = False


class FixedWeights:
    """Present a policy as steering ``objectives`` while it always decodes with its own fixed ``weights``.

    This is how a plain model becomes one point on a chart: the sweep's weights are accepted and ignored.
    """

    def __init__(self, policy: SteerablePolicy, weights: Sequence[float], objectives: Sequence[str]):
        self.policy = policy
        self.weights = list(weights)
        self.objectives = list(objectives)

    def generate(self, prompts, weights: WeightsLike, alpha: float | None = None,
                 config: GenerationConfig | None = None) -> list[Generation]:
        return self.policy.generate(prompts, self.weights, alpha=alpha, config=config)


def register_method(kind: str, builder: Builder) -> None:
    """Make ``kind`` usable in configs; ``builder(name=..., objectives=[...], **params) -> Method``."""
    if kind in _BUILDERS and _BUILDERS[kind] is not builder:
        raise ConfigError(f"method kind {kind!r} is already registered; choose another name")
    _BUILDERS[kind] = builder


def method_kinds() -> list[str]:
    return sorted(_BUILDERS)


def build_method(kind: str, name: str, objectives: Sequence[str], params: dict) -> Method:
    """Build one method from its config entry; unknown kinds and parameters are errors that list the options."""
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown method kind {kind!r} for method {name!r}; known kinds: {', '.join(method_kinds())}")
    builder = _BUILDERS[kind]
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("name", "objectives")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"method {name!r} ({kind}) does not take {unknown}; it takes {accepted}")
    try:
        return builder(name=name, objectives=list(objectives), **params)
    except TypeError as exc:
        raise ConfigError(f"method {name!r} ({kind}): {exc}") from None


def build_python(name: str, objectives: list[str], factory: str, args: dict | None = None,
                 single_point: bool = False) -> Method:
    """``factory: "package.module:function"`` called with ``args``; it must return a SteerablePolicy."""
    module_name, _, attr = factory.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"method {name!r}: factory must look like 'package.module:function', got {factory!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"method {name!r}: cannot import {factory!r}: {exc}") from None
    policy = fn(**(args or {}))
    if not isinstance(policy, SteerablePolicy):
        raise ConfigError(f"method {name!r}: {factory} returned {type(policy).__name__}, not a SteerablePolicy "
                          "(it needs .objectives and .generate)")
    return Method(name, policy, single_point)


register_method("python", build_python)
