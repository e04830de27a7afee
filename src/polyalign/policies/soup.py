"""Rewarded Soups (Ramé et al. 2023): interpolate the parameters of independently trained experts,
``theta(w) = sum_i w_i theta_i``, and for alpha mix further toward the reference (CLP paper, Eq. 3 with the
experts as the copies: ``(1 - f_mix(alpha)) sum_i w_i theta_i + f_mix(alpha) theta_ref``).

A soup is a :class:`~polyalign.policies.clp.CLP` whose copies come from m single-objective experts instead of
multi-task training: the same mixing code, exact for LoRA experts (the linear mix of their weight deltas, per
row), once per weighting and cached for parameter copies. The experts are fixed-weighting checkpoints at
``w = e_i`` (``polyalign train`` with ``policy.kind: experts``); ones that do not share a base model, an
architecture (selector, LoRA rank) or the objectives are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyalign import checkpoint as ckpt
from polyalign.errors import ConfigError
from polyalign.policies.clp import CLP, fresh, loader
from polyalign.policies.morlhf import load_copies, read_points, same_architecture

KIND = "soup"


class Soup(CLP):
    """Rewarded Soups over trained experts: weights on the simplex mix their parameters; ``alpha`` in
    ``[alpha_min, 1]`` mixes toward the reference by ``f_mix(alpha)`` (None: alpha_min, no reference)."""

    kind = KIND
    alpha_meaning = "KL strength in [alpha_min, 1]: the soup mixes toward the reference by f_mix(alpha) (Eq. 3-4)"

    @classmethod
    def from_experts(cls, paths: Sequence[str | Path], *, model: str | None = None, **placement: Any) -> Soup:
        """The soup of expert checkpoints (or run folders), one per objective, in any order: each expert's trained
        weighting ``e_i`` names the objective it steers."""
        folders, metas = read_points(paths)
        arch = same_architecture(folders, metas)
        objectives = list(arch["objectives"])
        slot: dict[int, int] = {}
        for j, (folder, meta) in enumerate(zip(folders, metas, strict=True)):
            if len(meta["points"]) != 1:
                raise ConfigError(f"{str(folder)!r} holds {len(meta['points'])} models; a soup takes one expert "
                                  "per checkpoint")
            i = _objective_of(meta["points"][0][0], objectives, folder)
            if i in slot:
                raise ConfigError(f"{str(folders[slot[i]])!r} and {str(folder)!r} are both experts for "
                                  f"{objectives[i]!r}: give one expert per objective")
            slot[i] = j
        missing = [objectives[i] for i in range(len(objectives)) if i not in slot]
        if missing:
            raise ConfigError(f"the soup has no expert for {missing} (objectives {objectives}): give one expert "
                              "per objective")
        order = [slot[i] for i in range(len(objectives))]
        policy = fresh(cls, arch, model=model, **placement)
        load_copies(policy, [folders[j] for j in order], [metas[j] for j in order], model or arch["base_model"])
        return policy


def _objective_of(w: Sequence[float], objectives: list[str], folder: Path) -> int:
    hot = [i for i, x in enumerate(w) if x != 0.0]
    if len(hot) != 1 or w[hot[0]] != 1.0:
        raise ConfigError(f"{str(folder)!r} was trained at w={list(w)}, not at one objective's e_i: a soup mixes "
                          "single-objective experts (for a front of fixed weightings, use kind: morlhf)")
    return hot[0]


ckpt.register_loader(KIND, loader(Soup))
