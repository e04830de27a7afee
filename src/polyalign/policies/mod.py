"""MOD, multi-objective decoding (Shi et al. 2024): a reference and M experts combined token by token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from polyalign import divergences
from polyalign.decode import Combine
from polyalign.errors import ConfigError, DivergenceError, WeightsError
from polyalign.experts import Expert, ModelBank
from polyalign.models import DEFAULT_MODEL
from polyalign.policies.base import EnginePolicy
from polyalign.weights import sums_to_one


class MOD(EnginePolicy):
    """Multi-objective decoding: ``pi(s) ∝ pi_ref(s) (grad f)^-1(-Z + sum_i w_i grad f(pi_i(s) / pi_ref(s)))`` at
    every step (MOD paper, Eq. 5/6), exactly normalised (:func:`polyalign.combine.combine_logprobs`).

    Weights: any finite reals (negative ones extrapolate where the maths allows). The reference may be left out
    where it cancels: reverse KL with weights summing to 1.
    """

    alpha_meaning = "none: MOD's KL strength is the scale of the weights (sum w = 1/beta)"

    def __init__(
        self,
        experts: Sequence[Expert],
        reference: Expert | None = None,
        divergence: str = "reverse_kl",
        objectives: Sequence[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chat: bool = True,
        allow_divergence_mismatch: bool = False,
    ) -> None:
        self.divergence = divergences.require_barrier(divergences.get(divergence))
        if not experts:
            raise ConfigError("MOD needs at least one expert")
        if not allow_divergence_mismatch:
            check_trained_divergences(experts, self.divergence.name)
        names = list(objectives) if objectives is not None else [e.label for e in experts]
        if len(names) != len(experts):
            raise ConfigError(f"{len(names)} objective names for {len(experts)} experts: give one name per expert")
        self.experts, self.reference_expert = list(experts), reference
        roles = ([reference] if reference is not None else []) + self.experts
        bank = ModelBank(roles, device=device, dtype=dtype, chat=chat)
        offset = 1 if reference is not None else 0
        ref_slot = bank.slot(0) if reference is not None else None
        head = Combine(self.divergence, ref_slot, [bank.slot(offset + i) for i in range(len(experts))])
        super().__init__(bank, head, ref_slot, names)

    @classmethod
    def from_personas(
        cls,
        personas: Mapping[str, str],
        model: str = DEFAULT_MODEL,
        reference_system_prompt: str | None = None,
        with_reference: bool = True,
        **kwargs,
    ) -> MOD:
        """Persona experts: one model, one system prompt per objective, all run as one batched forward.

        The reference is the same model with ``reference_system_prompt`` (None: the model's default). The persona
        names name the objectives unless ``objectives=`` says otherwise.
        """
        experts = [Expert(model=model, system_prompt=p, name=n) for n, p in personas.items()]
        reference = Expert(model=model, system_prompt=reference_system_prompt, name="reference")
        kwargs.setdefault("objectives", list(personas))
        return cls(experts, reference if with_reference else None, **kwargs)

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        weights = super().head_weights(weights, alpha)
        if self.reference is None and (self.divergence.name != "reverse_kl" or not bool(sums_to_one(weights).all())):
            raise WeightsError(
                f"without a reference model MOD needs reverse KL and weights summing to 1 (got "
                f"{self.divergence.name}, sums {weights.sum(-1).tolist()[:8]}): pass reference=Expert(...)")
        return weights


def trained_metadata(expert: Expert) -> dict[str, Any] | None:
    """The ``policy.json`` of an f-DPO expert (``polyalign train-expert``) in the expert's adapter or model
    directory: divergence, beta, base model, objective; None for any other expert."""
    from polyalign.files import read_json

    for spec in (expert.adapter, expert.model):
        meta_file = Path(spec).expanduser() / "policy.json" if spec else None
        if meta_file is not None and meta_file.is_file():
            meta = read_json(meta_file, "expert metadata")
            if isinstance(meta, dict) and meta.get("kind") == "fdpo_expert":
                return meta
    return None


def check_trained_divergences(experts: Sequence[Expert], decoding: str) -> None:
    """Refuse experts trained under another divergence than the decoding one: MOD's combination (Eq. 5) is the
    optimum for the weighted reward only when every expert is f-optimal under the same f (MOD paper, Sec. 4)."""
    for expert in experts:
        meta = trained_metadata(expert)
        if meta is None:
            continue
        trained = divergences.get(str(meta.get("divergence"))).name
        if trained != decoding:
            where = expert.adapter or expert.model
            raise DivergenceError(
                f"expert {expert.label!r} ({where}) was trained by f-DPO under {trained} (beta {meta.get('beta')}) "
                f"but MOD decodes under {decoding}: the combination is optimal only for experts trained under the "
                f"decoding divergence (Shi et al. 2024); decode with divergence {trained!r}, or allow the mismatch "
                "(allow_divergence_mismatch=True, --allow-divergence-mismatch)")
