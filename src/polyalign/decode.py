"""The decoding loop: greedy (MOD paper, Eq. 6), sampling and beam search over an ExpertBank.

At every step the bank gives next-token log-probs of the reference and the experts, MOD's
:func:`~polyalign.combine.combine_logprobs` turns them into one normalised distribution, and the loop
picks tokens from it. Temperature, top-k and top-p (transformers' logits warpers) apply *after*
combining. Finished prompts leave the batch (and the KV caches) at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from polyalign.combine import combine_logprobs
from polyalign.divergences import Divergence
from polyalign.experts import ExpertBank
from polyalign.interface import GenerationConfig

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class TokenEvent:
    """One generated token of prompt ``index``; ``text`` is the new text since its last event."""

    index: int
    token_id: int
    text: str
    finish_reason: FinishReason | None = None


@dataclass
class Draft:
    """A response being built: ids, per-token log-probs under the policy and the reference."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ref_logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None

    def extended(self, token: int, logprob: float, ref_logprob: float | None) -> Draft:
        ref = self.ref_logprobs + [ref_logprob] if ref_logprob is not None else []
        return Draft(self.ids + [token], self.logprobs + [logprob], ref)


class Decoder:
    """Runs one batch of prompts through ``bank`` with MOD weights ``[B, M]`` and a divergence."""

    def __init__(self, bank: ExpertBank, weights: torch.Tensor, divergence: str | Divergence,
                 config: GenerationConfig) -> None:
        self.bank = bank
        self.weights = weights.to(bank.device)
        self.divergence = divergence
        self.config = config
        self.tokenizer = bank.tokenizer

    def combine(self, logprobs: torch.Tensor, weights: torch.Tensor, step: int) -> torch.Tensor:
        """Combined log-probs ``[B, V]`` from the bank's ``[R, B, V]`` (reference first, if any)."""
        if self.bank.has_reference:
            combined = combine_logprobs(logprobs[0], logprobs[1:], weights, self.divergence)
        else:
            combined = combine_logprobs(None, logprobs, weights, self.divergence)
        if step < self.config.min_new_tokens:  # forbid EOS, renormalise over the rest
            combined[:, sorted(self.bank.eos_ids)] = float("-inf")
            combined = torch.log_softmax(combined, dim=-1)
        return combined

    def _ref(self, logprobs: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> list[float | None]:
        if not self.bank.has_reference:
            return [None] * len(tokens)
        return logprobs[0, rows, tokens].tolist()

    def _finish(self, seq: Draft) -> FinishReason | None:
        """Why ``seq`` stops after its last token, if it does; keeps ``seq.text`` up to date."""
        seq.text = self.tokenizer.decode(seq.ids, skip_special_tokens=True)
        if seq.ids[-1] in self.bank.eos_ids:
            return "eos"
        hits = [i for i in (seq.text.find(s) for s in self.config.stop) if i >= 0]
        if hits:
            seq.text = seq.text[: min(hits)]
            return "stop"
        if len(seq.ids) >= self.config.max_new_tokens:
            return "length"
        return None

    # -- greedy and sampling -------------------------------------------------------------------------------------

    def stream(self, prompts: Sequence[str], seqs: list[Draft] | None = None) -> Iterator[TokenEvent]:
        """Greedy or sampled decoding, one :class:`TokenEvent` per prompt and step."""
        cfg = self.config
        seqs = seqs if seqs is not None else [Draft() for _ in prompts]
        sent = [0] * len(prompts)
        warpers = _warpers(cfg)
        generator = None
        if cfg.strategy == "sample" and cfg.seed is not None:
            generator = torch.Generator(device=self.bank.device).manual_seed(cfg.seed)
        active = torch.arange(len(prompts), device=self.bank.device)
        logprobs = self.bank.start(prompts)
        for step in range(cfg.max_new_tokens):
            combined = self.combine(logprobs, self.weights[active], step)
            if cfg.strategy == "sample":
                scores = torch.log_softmax(warpers(None, combined), dim=-1)
                tokens = torch.multinomial(scores.exp(), 1, generator=generator).squeeze(-1)
            else:
                scores, tokens = combined, combined.argmax(dim=-1)
            rows = torch.arange(len(active), device=active.device)
            chosen = scores[rows, tokens].tolist()
            refs = self._ref(logprobs, rows, tokens)
            keep = []
            for j, (i, tok) in enumerate(zip(active.tolist(), tokens.tolist(), strict=True)):
                seq = seqs[i]
                seq.ids.append(tok)
                seq.logprobs.append(chosen[j])
                if refs[j] is not None:
                    seq.ref_logprobs.append(refs[j])
                seq.finish_reason = self._finish(seq)
                ready = len(seq.text) if seq.finish_reason else _streamable(seq.text, cfg.stop, sent[i])
                yield TokenEvent(i, tok, seq.text[sent[i]:ready], seq.finish_reason)
                sent[i] = ready
                if seq.finish_reason is None:
                    keep.append(j)
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=active.device)
                self.bank.select(index)
                active, tokens = active[index], tokens[index]
            logprobs = self.bank.step(tokens)

    # -- beam search ---------------------------------------------------------------------------------------------

    def beam_search(self, prompts: Sequence[str]) -> list[Draft]:
        """Beam search on the combined log-probs; score = sum log pi / length ** length_penalty."""
        cfg, beams, vocab = self.config, self.config.num_beams, self.bank.vocab_size
        n = len(prompts)
        logprobs = self.bank.start(prompts)
        expand = torch.arange(n, device=self.bank.device).repeat_interleave(beams)
        self.bank.select(expand)
        logprobs, weights = logprobs[:, expand], self.weights[expand]
        scores = torch.full((n, beams), float("-inf"), device=self.bank.device, dtype=torch.float64)
        scores[:, 0] = 0.0  # the beams start identical: let only one of them propose
        live = [[Draft() for _ in range(beams)] for _ in range(n)]
        done: list[list[tuple[float, Draft]]] = [[] for _ in range(n)]

        def final(score: float, seq: Draft) -> tuple[float, Draft]:
            return score / len(seq.ids) ** cfg.length_penalty, seq

        for step in range(cfg.max_new_tokens):
            combined = self.combine(logprobs, weights, step).double()
            total = (scores.view(-1, 1) + combined).view(n, beams * vocab)
            top_scores, top_ids = total.topk(min(2 * beams, beams * vocab), dim=-1)
            origin, next_tokens, next_scores, next_live = [], [], [], []
            for b in range(n):
                chosen: list[tuple[float, int, int, Draft]] = []
                for score, flat in zip(top_scores[b].tolist(), top_ids[b].tolist(), strict=True):
                    beam, tok = divmod(flat, vocab)
                    row = b * beams + beam
                    ref = logprobs[0, row, tok].item() if self.bank.has_reference else None
                    seq = live[b][beam].extended(tok, combined[row, tok].item(), ref)
                    seq.finish_reason = self._finish(seq)
                    if seq.finish_reason in ("eos", "stop"):
                        if len(done[b]) < beams and score > float("-inf"):
                            done[b].append(final(score, seq))
                    else:
                        chosen.append((score, beam, tok, seq))
                    if len(chosen) == beams:
                        break
                while len(chosen) < beams:  # tiny vocabularies: pad with dead beams
                    chosen.append((float("-inf"), 0, chosen[0][2] if chosen else 0, live[b][0]))
                for score, beam, tok, seq in chosen:
                    origin.append(b * beams + beam)
                    next_tokens.append(tok)
                    next_scores.append(score)
                    next_live.append(seq)
            live = [next_live[b * beams:(b + 1) * beams] for b in range(n)]
            scores = torch.tensor(next_scores, device=scores.device, dtype=torch.float64).view(n, beams)
            if all(len(d) >= beams for d in done) or all(s.finish_reason for row in live for s in row):
                break
            self.bank.select(torch.tensor(origin, device=self.bank.device))
            logprobs = self.bank.step(torch.tensor(next_tokens, device=self.bank.device))
        for b in range(n):
            for score, seq in zip(scores[b].tolist(), live[b], strict=True):
                if seq.ids and score > float("-inf"):
                    seq.finish_reason = seq.finish_reason or "length"
                    done[b].append(final(score, seq))
        return [max(d, key=lambda pair: pair[0])[1] for d in done]


def _streamable(text: str, stops: Sequence[str], sent: int) -> int:
    """How much of an unfinished ``text`` is safe to show: hold back a partial UTF-8 character and
    any tail that may yet grow into a stop string (which would be cut from the answer)."""
    if text.endswith("\ufffd"):
        return sent
    ready = len(text)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                ready = min(ready, len(text) - k)
                break
    return max(ready, sent)


def _warpers(config: GenerationConfig) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers
