"""Methods from config: a name, alphas, and a typed policy config (:mod:`polyalign.policies.config`).

The evaluation loop never looks at the kind. Plugins add kinds with
:func:`polyalign.policies.config.register_policy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from polyalign.errors import ConfigError
from polyalign.interface import SteerablePolicy
from polyalign.policies.config import parse_policy, policy_kinds, register_policy


@dataclass
class Method:
    """A named policy to evaluate; ``single_point``: it ignores the weights and is generated once; ``weightings``:
    the only weightings it answers (e.g. MORLHF's trained ones, in the scored objectives' order), used instead of
    the grid."""

    name: str
    policy: SteerablePolicy
    single_point: bool = False
    weightings: list[list[float]] | None = None


def build_method(kind: str, name: str, objectives: Sequence[str], params: dict) -> Method:
    """Build one method from its config entry; unknown kinds and fields are errors that list the options."""
    config = parse_policy({"kind": kind, **params}, f"method {name!r}")
    check_objective_names(name, getattr(config, "expert_names", None), objectives)
    try:
        policy = config.build(list(objectives))
    except ConfigError as exc:
        raise ConfigError(f"method {name!r}: {exc}") from None
    single = bool(config.single_point) or not getattr(policy, "steerable", True)
    own = getattr(policy, "weightings", None)
    if own is not None:
        from polyalign.evaluation.sweep import objective_order

        order = objective_order(policy.objectives, objectives)
        own = [[w[order.index(j)] for j in range(len(objectives))] for w in own]
    return Method(name, policy, single, own)


def check_objective_names(method: str, names: Sequence[str | None] | None, objectives: Sequence[str]) -> None:
    """Experts are matched to objectives by name when they are named after all of them, by position when none of
    their names is an objective's; anything in between is ambiguous and refused."""
    given = [n for n in names or [] if n is not None]
    if not set(given) & set(objectives) or sorted(given) == sorted(objectives):
        return
    raise ConfigError(f"method {method!r} names its experts {list(names or [])} but the objectives are "
                      f"{list(objectives)}: name every expert (persona key) after the objective it steers, or use "
                      "names that are not objectives to pair them by position")


__all__ = ["Method", "build_method", "check_objective_names", "policy_kinds", "register_policy"]
