"""Methods from config: one registry, kind name -> builder. The evaluation loop never looks at the kind.

A builder takes the method's parameters from the config (plus the evaluated objective names) and returns
a :class:`Method`: a name, a :class:`~polyalign.interface.SteerablePolicy`, and whether it is a single
point (a plain model that ignores the weights is generated once, not once per weighting).
Plugins add kinds with :func:`register_method`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from polyalign.errors import ConfigError, ObjectiveError
from polyalign.interface import Generation, GenerationConfig, SteerablePolicy, WeightsLike
from polyalign.objectives.python import import_callable

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
    try:
        fn = import_callable(factory, f"method {name!r}: factory")
    except ObjectiveError as exc:
        raise ConfigError(str(exc)) from None
    policy = fn(**(args or {}))
    if not isinstance(policy, SteerablePolicy):
        raise ConfigError(f"method {name!r}: {factory} returned {type(policy).__name__}, not a SteerablePolicy "
                          "(it needs .objectives and .generate)")
    return Method(name, policy, single_point)


register_method("python", build_python)


def _expert(spec: dict | str | None, what: str):
    """An :class:`~polyalign.experts.Expert` from a model string or a mapping of its fields."""
    from polyalign.experts import Expert

    if spec is None or isinstance(spec, Expert):
        return spec
    if isinstance(spec, str):
        return Expert(model=spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"{what} must be a model name or a mapping with model/adapter/system_prompt/name")
    try:
        return Expert(**spec)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def build_mod(name: str, objectives: list[str], experts: list | None = None, reference=None,
              personas: dict[str, str] | None = None, model: str | None = None,
              reference_system_prompt: str | None = None, divergence: str = "reverse_kl",
              device: str | None = None, dtype: str | None = None) -> Method:
    """MOD over ``experts`` (models, adapters, system prompts) or one ``model`` with ``personas``.

    Expert ``i`` steers objective ``i``; without explicit names the evaluated objectives name them.
    """
    from polyalign.models import DEFAULT_MODEL
    from polyalign.policies import MOD

    if (experts is None) == (personas is None):
        raise ConfigError(f"method {name!r} (mod): give either experts or personas")
    if personas is not None:
        policy = MOD.from_personas(personas, model=model or DEFAULT_MODEL,
                                   reference_system_prompt=reference_system_prompt, divergence=divergence,
                                   device=device, dtype=dtype)
    else:
        built = [_expert(e, f"method {name!r} expert {i}") for i, e in enumerate(experts)]
        policy = MOD(built, _expert(reference, f"method {name!r} reference"), divergence=divergence,
                     objectives=objectives if len(built) == len(objectives) else None, device=device, dtype=dtype)
    return Method(name, policy)


def build_model(name: str, objectives: list[str], model: str | None = None, adapter: str | None = None,
                system_prompt: str | None = None, reference=None, device: str | None = None,
                dtype: str | None = None) -> Method:
    """A plain model as a single point: MOD with one expert at weight 1 equals the model itself (the
    reference cancels under reverse KL), and the reference (default: the same model without adapter or
    system prompt) still gives the KL.
    """
    from polyalign.experts import Expert
    from polyalign.models import DEFAULT_MODEL
    from polyalign.policies import MOD

    model = model or DEFAULT_MODEL
    expert = Expert(model=model, adapter=adapter, system_prompt=system_prompt, name=name)
    ref = _expert(reference, f"method {name!r} reference") or Expert(model=model, name="reference")
    policy = MOD([expert], ref, objectives=[name], device=device, dtype=dtype)
    return Method(name, FixedWeights(policy, [1.0], objectives), single_point=True)


register_method("mod", build_mod)
register_method("model", build_model)
