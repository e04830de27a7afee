"""MOD, multi-objective decoding (Shi et al. 2024): a reference and M experts combined token by token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from polyalign import divergences
from polyalign.decode import Combine
from polyalign.errors import ConfigError, WeightsError
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
    ) -> None:
        self.divergence = divergences.require_barrier(divergences.get(divergence))
        if not experts:
            raise ConfigError("MOD needs at least one expert")
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
