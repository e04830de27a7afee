"""What every policy decoded by polyalign's engine shares: generate, stream, sessions and teacher forcing.

A subclass gives a :class:`~polyalign.experts.ModelBank`, a head (:mod:`polyalign.decode`), where the reference
sits, its objectives and weight domain, and how the user's ``(weights, alpha)`` become the head's weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from polyalign.decode import DecodeSession, Draft, Processor, Steering, StepContext, beam_search
from polyalign.errors import ConfigError
from polyalign.experts import ModelBank
from polyalign.interface import Generation, GenerationConfig, TokenEvent, check_alpha, check_prompts
from polyalign.weights import REAL, WeightDomain, WeightsLike, check_weights

_SCORE_CHUNK = 8  # prompts per teacher-forced forward: [U, B, T, V] log-probs grow fast


@dataclass
class SequenceLogprobs:
    """Teacher-forced per-token log-probs of one response under the policy and the reference."""

    token_ids: list[int]
    logprobs: list[float]
    ref_logprobs: list[float] | None

    @property
    def kl(self) -> float | None:
        """Single-sample estimate of KL(pi || pi_ref) on this response."""
        if self.ref_logprobs is None:
            return None
        return float(sum(a - b for a, b in zip(self.logprobs, self.ref_logprobs, strict=True)))


class EnginePolicy:
    """A :class:`~polyalign.interface.SteerablePolicy` decoded by :mod:`polyalign.decode`."""

    weight_domain: WeightDomain = REAL
    alpha_meaning: str = "not used: this policy takes no alpha"
    steerable: bool = True

    def __init__(self, bank: ModelBank, head: Processor, reference: int | None, objectives: Sequence[str]) -> None:
        names = list(objectives)
        if len(set(names)) != len(names):
            raise ConfigError(f"objective names must be unique, got {names}")
        self.bank, self.head, self.reference, self.objectives = bank, head, reference, names

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    # -- what subclasses may change ----------------------------------------------------------------------------

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        """The head's weights ``[B, M']`` for the user's validated ``weights [B, M]`` and ``alpha``."""
        if alpha is not None:
            raise ConfigError(f"{type(self).__name__} takes no alpha ({self.alpha_meaning})")
        return weights

    # -- the engine --------------------------------------------------------------------------------------------

    def steering(self, prompts: Sequence[str] | str, weights: WeightsLike, alpha: float | None = None
                 ) -> tuple[list[str], torch.Tensor, Steering]:
        """Validated prompts, the user's weights ``[B, M]`` and what the engine needs to decode them."""
        prompts = check_prompts(prompts)
        w = check_weights(weights, len(prompts), self.objectives, self.weight_domain)
        head_w = self.head_weights(w, check_alpha(alpha))
        return prompts, w, Steering(self.bank, self.head, self.reference, head_w)

    def start(self, prompts: Sequence[str] | str, weights: WeightsLike, alpha: float | None = None,
              config: GenerationConfig | None = None) -> DecodeSession:
        """A new :class:`~polyalign.decode.DecodeSession` (greedy or sampling) that the caller steps."""
        prompts, _, steering = self.steering(prompts, weights, alpha)
        return DecodeSession(steering, prompts, config or GenerationConfig())

    def join(self, session: DecodeSession, prompts: Sequence[str] | str, weights: WeightsLike,
             alpha: float | None = None, seed: int | None = None, config: GenerationConfig | None = None
             ) -> list[int]:
        """Add prompts to a running ``session`` of this policy (continuous batching): their rows join at its next
        step and decode as they would alone, with their own ``config`` (length, stops, ``n``, strategy, sampling;
        default: the session's). Returns their row indices in ``session.drafts``."""
        if session.steering.bank is not self.bank or session.steering.head is not self.head:
            raise ConfigError("that session belongs to another policy")
        prompts, _, steering = self.steering(prompts, weights, alpha)
        return session.add(prompts, steering.weights, seed, config)

    def generate(self, prompts: Sequence[str] | str, weights: WeightsLike, alpha: float | None = None,
                 config: GenerationConfig | None = None) -> list[Generation]:
        """Decode every prompt with its weights (one vector for all, or one per prompt); ``config.n`` responses
        per prompt, grouped by prompt."""
        config = config or GenerationConfig()
        prompts, w, steering = self.steering(prompts, weights, alpha)
        if config.strategy == "beam":
            per_prompt, prompt_ids = beam_search(steering, prompts, config)
            drafts = [(i, k, d) for i, best in enumerate(per_prompt) for k, d in enumerate(best)]
            seed = None
        else:
            session = DecodeSession(steering, prompts, config)
            prompt_ids = [session.prompt_ids[i * config.n] for i in range(len(prompts))]
            for _ in session:
                pass
            drafts = [(i // config.n, i % config.n, d) for i, d in enumerate(session.drafts)]
            seed = session.seed if config.strategy == "sample" else None
        rows = w.tolist()
        return [self._generation(prompts[i], d, rows[i], alpha, prompt_ids[i], k, seed) for i, k, d in drafts]

    def stream(self, prompts: Sequence[str] | str, weights: WeightsLike, alpha: float | None = None,
               config: GenerationConfig | None = None) -> Iterator[TokenEvent]:
        """Yield tokens as they are decoded (greedy or sampling), each tagged with its row (prompt ``index // n``)."""
        config = config or GenerationConfig()
        if config.strategy == "beam":
            raise ConfigError("streaming needs greedy or sample decoding: beam search only knows its answer at the end")
        yield from self.start(prompts, weights, alpha, config)

    def _generation(self, prompt: str, draft: Draft, weights: list[float], alpha: float | None,
                    prompt_ids: list[int], sample: int, seed: int | None) -> Generation:
        return Generation(
            prompt=prompt, text=draft.text, token_ids=draft.ids, weights=weights,
            finish_reason=draft.finish_reason or "length", logprobs=draft.logprobs,
            ref_logprobs=draft.ref_logprobs if self.has_reference else None, alpha=alpha,
            prompt_token_ids=list(prompt_ids), sample_index=sample, seed=seed,
        )

    @torch.inference_mode()
    def sequence_logprobs(self, prompts: Sequence[str] | str, responses: Sequence[str | Sequence[int]],
                          weights: WeightsLike, alpha: float | None = None) -> list[SequenceLogprobs]:
        """Teacher-forced per-token log-probs of ``responses`` (text, or token ids) under the policy and the
        reference: what training and KL estimates need. Equal to ``Generation.logprobs`` on generated tokens."""
        prompts, _, steering = self.steering(prompts, weights, alpha)
        if isinstance(responses, str) or len(responses) != len(prompts):
            raise ConfigError(f"give one response per prompt ({len(prompts)}), as a list")
        ids = [self._response_ids(r, i) for i, r in enumerate(responses)]
        out: list[SequenceLogprobs] = []
        for s in range(0, len(prompts), _SCORE_CHUNK):
            chunk = slice(s, s + _SCORE_CHUNK)
            raw = self.bank.score(prompts[chunk], ids[chunk], steering.weights[chunk])
            policy = self.head(None, StepContext(raw, steering.weights[chunk].to(self.bank.device)))
            for j, tokens in enumerate(ids[chunk]):
                t = torch.tensor(tokens, device=self.bank.device)
                positions = torch.arange(len(tokens), device=self.bank.device)
                ref = None if self.reference is None else raw[self.reference, j, positions, t].tolist()
                out.append(SequenceLogprobs(list(tokens), policy[j, positions, t].tolist(), ref))
        return out

    def _response_ids(self, response: str | Sequence[int], i: int) -> list[int]:
        if isinstance(response, str):
            ids = self.bank.tokenizer(response, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        else:
            ids = [int(t) for t in response]
            if any(t < 0 or t >= self.bank.vocab_size for t in ids):
                raise ConfigError(f"response {i} holds token ids outside the vocabulary [0, {self.bank.vocab_size})")
        if not ids:
            raise ConfigError(f"response {i} is empty: nothing to score")
        return ids


def sequence_logprobs(policy, prompts: Sequence[str] | str, responses: Sequence[str | Sequence[int]],
                      weights: WeightsLike, alpha: float | None = None) -> list[SequenceLogprobs]:
    """Teacher-forced per-token log-probs of ``responses`` under ``policy`` and its reference."""
    method = getattr(policy, "sequence_logprobs", None)
    if method is None:
        raise ConfigError(f"{type(policy).__name__} cannot score given responses (it has no sequence_logprobs)")
    return method(prompts, responses, weights, alpha)
