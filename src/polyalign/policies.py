"""Steerable policies: every method behind the one :class:`~polyalign.interface.SteerablePolicy` interface."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch

from polyalign import divergences
from polyalign.decode import Decoder, Draft, TokenEvent
from polyalign.errors import ConfigError, WeightsError
from polyalign.experts import Expert, ExpertBank
from polyalign.interface import (
    Generation,
    GenerationConfig,
    WeightsLike,
    check_prompts,
    weight_matrix,
)
from polyalign.models import DEFAULT_MODEL


class MOD:
    """Multi-objective decoding (Shi et al. 2024): combine a reference and M experts token by token.

    ``pi(s) ∝ pi_ref(s) (grad f)^-1(-Z + sum_i w_i grad f(pi_i(s) / pi_ref(s)))`` at every step, exactly
    normalised (see :func:`polyalign.combine.combine_logprobs`). The reference may be left out where it
    cancels: reverse KL with weights summing to 1.
    """

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
        self.divergence = divergences.get(divergence)
        divergences.require_barrier(self.divergence)
        names = list(objectives) if objectives is not None else [e.label for e in experts]
        if len(names) != len(experts):
            raise ConfigError(f"{len(names)} objective names for {len(experts)} experts: give one name per expert")
        if len(set(names)) != len(names):
            raise ConfigError(f"objective names must be unique, got {names}")
        self.objectives = names
        self.bank = ExpertBank(experts, reference, device=device, dtype=dtype, chat=chat)

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

        The reference is the same model with ``reference_system_prompt`` (None: the model's default).
        """
        experts = [Expert(model=model, system_prompt=p, name=n) for n, p in personas.items()]
        reference = Expert(model=model, system_prompt=reference_system_prompt, name="reference")
        return cls(experts, reference if with_reference else None, objectives=list(personas), **kwargs)

    def _check(self, prompts: Sequence[str] | str, weights: WeightsLike, alpha: float | None,
               config: GenerationConfig | None) -> tuple[list[str], torch.Tensor, GenerationConfig]:
        if alpha is not None:
            raise ConfigError("MOD has no alpha: the KL strength is the scale of the weights (sum w = 1/beta)")
        prompts = check_prompts(prompts)
        w = weight_matrix(weights, len(prompts), self.objectives)
        if not self.bank.has_reference:
            sums = w.sum(dim=-1)
            if self.divergence.name != "reverse_kl" or not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
                raise WeightsError(
                    f"without a reference model MOD needs reverse KL and weights summing to 1 (got "
                    f"{self.divergence.name}, sums {sums.tolist()}): pass reference=Expert(...)"
                )
        return prompts, w, config or GenerationConfig()

    def generate(
        self,
        prompts: Sequence[str] | str,
        weights: WeightsLike,
        alpha: float | None = None,
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Decode every prompt with its weights (one vector for all, or one per prompt)."""
        prompts, w, config = self._check(prompts, weights, alpha, config)
        decoder = Decoder(self.bank, w, self.divergence, config)
        if config.strategy == "beam":
            drafts = decoder.beam_search(prompts)
        else:
            drafts = [Draft() for _ in prompts]
            for _ in decoder.stream(prompts, drafts):
                pass
        return [self._generation(p, d, row) for p, d, row in zip(prompts, drafts, w.tolist(), strict=True)]

    def stream(
        self,
        prompts: Sequence[str] | str,
        weights: WeightsLike,
        config: GenerationConfig | None = None,
    ) -> Iterator[TokenEvent]:
        """Yield tokens as they are decoded (greedy or sampling), each tagged with its prompt index."""
        prompts, w, config = self._check(prompts, weights, None, config)
        if config.strategy == "beam":
            raise ConfigError("streaming needs greedy or sample decoding: beam search only knows its answer at the end")
        yield from Decoder(self.bank, w, self.divergence, config).stream(prompts)

    def _generation(self, prompt: str, draft: Draft, weights: list[float]) -> Generation:
        return Generation(
            prompt=prompt,
            text=draft.text,
            token_ids=draft.ids,
            weights=weights,
            finish_reason=draft.finish_reason or "length",
            logprobs=draft.logprobs,
            ref_logprobs=draft.ref_logprobs if self.bank.has_reference else None,
        )
