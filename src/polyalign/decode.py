"""The generation engine: one decoding loop for every policy (greedy, MOD paper Eq. 6; sampling; beam search).

A policy hands the engine a :class:`Steering`: a next-token source (a :class:`~polyalign.experts.ModelBank`
holding the reference and whatever the method decodes from), a *head* processor that turns the source's
per-role log-probs ``[U, B, V]`` into the policy's own next-token log-probs ``[B, V]`` (MOD's combination,
or one role), and where the reference sits (for KL). After the head come the decoding constraints
(``min_new_tokens``, ``repetition_penalty``) and, when sampling, transformers' warpers (temperature, top-k,
top-p): per-step transforms that compose, like transformers' ``LogitsProcessor``\\ s. The loop knows no method.

A :class:`DecodeSession` owns everything one generation needs (the bank's caches, the live rows, their
detokenizers and random generators), so any number of sessions can run on one policy, interleaved.
Finished rows leave the batch and the caches at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from polyalign.combine import combine_logprobs
from polyalign.divergences import Divergence
from polyalign.errors import ConfigError
from polyalign.experts import ModelBank
from polyalign.interface import FinishReason, GenerationConfig, TokenEvent


@dataclass
class StepContext:
    """What a processor may read at one step, one entry per live row."""

    raw: torch.Tensor
    """Per-role next-token log-probs ``[U, B, V]`` (or ``[U, B, T, V]`` when teacher forcing)."""
    weights: torch.Tensor
    """The head's weights per row ``[B, M]`` (float64)."""
    lengths: torch.Tensor | None = None
    """Tokens generated so far per row ``[B]``."""
    seen: torch.Tensor | None = None
    """Tokens in each row's prompt or response so far ``[B, V]`` (only with a repetition penalty)."""


Processor = Callable[[torch.Tensor | None, StepContext], torch.Tensor]


class Combine:
    """MOD's head: :func:`~polyalign.combine.combine_logprobs` of the reference and expert rows (DESIGN.md, MOD)."""

    def __init__(self, divergence: str | Divergence, reference: int | None, experts: Sequence[int]) -> None:
        self.divergence, self.reference = divergence, reference
        experts = list(experts)
        contiguous = experts == list(range(experts[0], experts[0] + len(experts)))
        self.experts: slice | list[int] = slice(experts[0], experts[-1] + 1) if contiguous else experts

    def __call__(self, scores: torch.Tensor | None, ctx: StepContext) -> torch.Tensor:
        reference = None if self.reference is None else ctx.raw[self.reference]
        return combine_logprobs(reference, ctx.raw[self.experts], ctx.weights, self.divergence, validate=False)


class SelectRole:
    """The head of a single-model policy: the log-probs of one role."""

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __call__(self, scores: torch.Tensor | None, ctx: StepContext) -> torch.Tensor:
        return ctx.raw[self.slot]


class MinNewTokens:
    """Forbid EOS while a row has fewer than ``min_new_tokens`` tokens; renormalise over the rest."""

    def __init__(self, min_new_tokens: int, eos_ids: Sequence[int]) -> None:
        self.min_new_tokens, self.eos_ids = min_new_tokens, sorted(eos_ids)

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        early = ctx.lengths < self.min_new_tokens
        if not bool(early.any()):
            return scores
        masked = scores.clone()
        masked[early.nonzero().squeeze(-1)[:, None], self.eos_ids] = -torch.inf
        lse = torch.logsumexp(masked, dim=-1, keepdim=True)
        if bool(torch.isneginf(lse).any()):
            row = int(torch.isneginf(lse).squeeze(-1).nonzero()[0])
            raise ConfigError(f"min_new_tokens={self.min_new_tokens}: after {int(ctx.lengths[row])} tokens the policy "
                              "gives every token but EOS probability 0, so the response cannot go on; lower "
                              "min_new_tokens")
        return masked - lse


class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al. 2019) on log-probs of tokens already seen, renormalised.

    Written here rather than taken from transformers because its processor needs the full ``input_ids`` each
    step; a per-row ``seen`` mask kept by the session is cheaper and survives rows joining and leaving.
    """

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.log_softmax(torch.where(ctx.seen, penalised, scores), dim=-1)


@dataclass
class Steering:
    """What a policy gives the engine: the source, its head, where the reference sits, and the per-prompt
    weights the head reads."""

    bank: ModelBank
    head: Processor
    reference: int | None
    weights: torch.Tensor


def constraints(config: GenerationConfig, eos_ids: Sequence[int]) -> list[Processor]:
    """The decoding constraints after the head (they shape what is picked, not the logged policy log-probs)."""
    out: list[Processor] = []
    if config.min_new_tokens > 0:
        out.append(MinNewTokens(config.min_new_tokens, eos_ids))
    if config.repetition_penalty != 1.0:
        out.append(RepetitionPenalty(config.repetition_penalty))
    return out


def policy_scores(steering: Steering, processors: Sequence[Processor], ctx: StepContext
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's own log-probs (the head's output) and the scores decoding picks from (after the constraints)."""
    policy = steering.head(None, ctx)
    scores = policy
    for processor in processors:
        scores = processor(scores, ctx)
    return policy, scores


def seen_tokens(prompt_ids: Sequence[Sequence[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """The repetition penalty's ``[B, V]`` mask of the tokens in each row's prompt."""
    seen = torch.zeros(len(prompt_ids), vocab, dtype=torch.bool, device=device)
    for j, ids in enumerate(prompt_ids):
        seen[j, [t for t in ids if t < vocab]] = True
    return seen


def warpers(config: GenerationConfig) -> LogitsProcessorList:
    """transformers' sampling warpers, applied after combining."""
    out = LogitsProcessorList()
    if config.temperature != 1.0:
        out.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None:
        out.append(TopKLogitsWarper(config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        out.append(TopPLogitsWarper(config.top_p))
    return out


class Detokenizer:
    """Incremental decoding of one response (the prefix-offset method of text-generation-inference): a few
    tokens are decoded per step instead of the whole response, and a partial UTF-8 character is held back."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.prefix, self.read, self.text = tokenizer, 0, 0, ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, ids: list[int]) -> None:
        """Account for the newest token of ``ids`` (the whole response so far)."""
        before = self._decode(ids[self.prefix:self.read])
        now = self._decode(ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.text += now[len(before):]
            self.prefix, self.read = self.read, len(ids)

    def flush(self, ids: list[int]) -> None:
        """The response ended: take what is held back, less a partial character cut off at the end."""
        before = self._decode(ids[self.prefix:self.read])
        now = self._decode(ids[self.prefix:])
        if len(now) > len(before):
            self.text += now[len(before):].rstrip("\ufffd")
        self.prefix = self.read = len(ids)

    def copy(self) -> Detokenizer:
        other = Detokenizer(self.tokenizer)
        other.prefix, other.read, other.text = self.prefix, self.read, self.text
        return other


@dataclass
class Draft:
    """A response being built: ids, per-token log-probs under the policy and the reference, its text."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ref_logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None


class _Finisher:
    """Appends tokens to drafts, keeps their text and decides why (and whether) each one stops."""

    def __init__(self, config: GenerationConfig, eos_ids: set[int]) -> None:
        self.config = config
        self.eos_ids, self.stop_ids = eos_ids, set(config.stop_token_ids)

    def add(self, draft: Draft, detok: Detokenizer, token: int, logprob: float, ref: float | None) -> None:
        draft.ids.append(token)
        draft.logprobs.append(logprob)
        if ref is not None:
            draft.ref_logprobs.append(ref)
        old = len(detok.text)
        detok.add(draft.ids)
        reason: FinishReason | None = None
        if token in self.eos_ids:
            reason = "eos"
        elif token in self.stop_ids:
            reason = "stop"
        elif len(draft.ids) >= self.config.max_new_tokens:
            reason = "length"
        if reason is not None:
            detok.flush(draft.ids)
        draft.text = detok.text
        cut = self._stop_string(draft.text, old)
        if cut is not None:
            draft.text, reason = draft.text[:cut], "stop"
        draft.finish_reason = reason

    def _stop_string(self, text: str, old: int) -> int | None:
        hits = [i for s in self.config.stop if (i := text.find(s, max(0, old - len(s) + 1))) >= 0]
        return min(hits) if hits else None


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one row's generator: independent of the rest of the batch, reproducible from ``seed``."""
    return int(np.random.SeedSequence([seed, prompt_index, sample_index]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Row:
    index: int
    draft: Draft
    detok: Detokenizer
    finisher: _Finisher
    warpers: LogitsProcessorList | None = None
    """The row's sampling warpers (shared by rows with the same settings); None decodes it greedily."""
    generator: torch.Generator | None = None
    sent: int = 0


class DecodeSession:
    """One generation (greedy or sampling) over ``prompts``: ``n`` rows per prompt, stepped until every row is
    done. Owns the bank's per-generation state; rows leave the batch (and the caches) as soon as they finish.

    ``for events in session``... or :meth:`step` one token for every live row at a time. Rows that join later may
    bring their own options (:meth:`add`), so one session serves requests of any length, stop strings, strategy
    and sampling settings (a server's scheduler keeps one session running, :mod:`polyalign.serve.scheduler`).
    """

    def __init__(self, steering: Steering, prompts: Sequence[str], config: GenerationConfig) -> None:
        if config.strategy == "beam":
            raise ConfigError("a decode session runs greedy or sample decoding; beam search is decode.beam_search")
        bank = steering.bank
        self.steering, self.config, self.bank = steering, config, bank
        self.seed = config.seed if config.seed is not None else secrets.randbits(63)
        self.constraints = constraints(config, bank.eos_ids)
        self.constraints_penalise = config.repetition_penalty != 1.0
        self._warpers: dict[tuple, LogitsProcessorList] = {}
        self.rows: list[_Row] = []
        self.drafts: list[Draft] = []
        self.prompt_ids: list[list[int]] = []
        self._prompts = 0
        self.state = None
        self.add(prompts, steering.weights)

    def add(self, prompts: Sequence[str], weights: torch.Tensor, seed: int | None = None,
            config: GenerationConfig | None = None) -> list[int]:
        """Rows for more prompts (``n`` each, with the head's weights ``[len(prompts), M]``) join at the next step:
        continuous batching. Returns their row indices (``drafts[i]``). With ``seed`` their sampling is seeded as a
        generation of these prompts alone with that seed; without, they continue the session's own seed.

        ``config`` (default: the session's) sets these rows' length, stops, ``n``, strategy and sampling warpers;
        ``min_new_tokens`` and ``repetition_penalty`` act on the whole batch and must be the session's."""
        config = self._row_config(config)
        bank, n = self.bank, config.n
        state, logprobs = bank.start(prompts, config.max_new_tokens, weights)
        expand = torch.arange(len(prompts), device=bank.device).repeat_interleave(n)
        if n > 1:
            state.select(expand)
            logprobs = logprobs[:, expand]
        weights = weights.to(bank.device)[expand]
        first, offset = len(self.drafts), (self._prompts if seed is None else 0)
        finisher, row_warpers = _Finisher(config, bank.eos_ids), self._row_warpers(config)
        new = [_Row(first + j, Draft(), Detokenizer(bank.tokenizer), finisher, row_warpers,
                    self._generator(row_warpers, self.seed if seed is None else seed, offset + j // n, j % n))
               for j in range(len(expand))]
        seen = seen_tokens(state.prompt_ids, bank.vocab_size, bank.device) if self.constraints_penalise else None
        lengths = torch.zeros(len(new), dtype=torch.long, device=bank.device)
        self.prompt_ids += list(state.prompt_ids)
        self.drafts += [r.draft for r in new]
        self._prompts += len(prompts)
        if self.state is None or not self.rows:
            self.state, self.logprobs, self.weights, self.lengths, self.seen = state, logprobs, weights, lengths, seen
        else:
            self.state.extend(state)
            self.logprobs = torch.cat([self.logprobs, logprobs], dim=1)
            self.weights = torch.cat([self.weights, weights])
            self.lengths = torch.cat([self.lengths, lengths])
            self.seen = None if seen is None else torch.cat([self.seen, seen])
        self.rows += new
        return [r.index for r in new]

    def _row_config(self, config: GenerationConfig | None) -> GenerationConfig:
        if config is None:
            return self.config
        if config.strategy == "beam":
            raise ConfigError("a decode session runs greedy or sample decoding; beam search is decode.beam_search")
        for name in ("min_new_tokens", "repetition_penalty"):
            if getattr(config, name) != getattr(self.config, name):
                raise ConfigError(f"rows joining a session share its {name} ({getattr(self.config, name)}); got "
                                  f"{getattr(config, name)}: start another session")
        return config

    def _row_warpers(self, config: GenerationConfig) -> LogitsProcessorList | None:
        """One warper list per distinct sampling setting, so that rows sharing it are warped as one batch."""
        if config.strategy != "sample":
            return None
        key = (config.temperature, config.top_k, config.top_p)
        if key not in self._warpers:
            self._warpers[key] = warpers(config)
        return self._warpers[key]

    def _generator(self, row_warpers: LogitsProcessorList | None, seed: int, prompt_index: int, sample: int
                   ) -> torch.Generator | None:
        if row_warpers is None:
            return None
        return torch.Generator(device=self.bank.device).manual_seed(row_seed(seed, prompt_index, sample))

    @property
    def done(self) -> bool:
        return not self.rows

    def __iter__(self) -> Iterator[TokenEvent]:
        while not self.done:
            yield from self.step()

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Pick one token for every live row; return their events. Finished rows leave the session."""
        ctx = StepContext(self.logprobs, self.weights, self.lengths, self.seen)
        policy, scores = policy_scores(self.steering, self.constraints, ctx)
        tokens = self._pick(scores)
        picked = [tokens.double(), policy.gather(-1, tokens[:, None]).squeeze(-1).double()]
        ref = self.steering.reference
        if ref is not None:
            picked.append(self.logprobs[ref].gather(-1, tokens[:, None]).squeeze(-1).double())
        host = torch.stack(picked).tolist()  # one device sync per step
        events, keep = [], []
        for j, row in enumerate(self.rows):
            token = int(host[0][j])
            row.finisher.add(row.draft, row.detok, token, host[1][j], host[2][j] if ref is not None else None)
            text, reason = row.draft.text, row.draft.finish_reason
            ready = len(text) if reason else _streamable(text, row.finisher.config.stop, row.sent)
            events.append(TokenEvent(row.index, token, text[row.sent:ready], reason))
            row.sent = ready
            if reason is None:
                keep.append(j)
        if len(keep) < len(self.rows):
            self._keep(keep)
        if self.rows:
            tokens = tokens[keep] if len(keep) < len(tokens) else tokens
            if self.seen is not None:
                self.seen[torch.arange(len(tokens), device=tokens.device), tokens] = True
            self.lengths = self.lengths + 1
            self.logprobs = self.state.step(tokens)
        return events

    def _pick(self, scores: torch.Tensor) -> torch.Tensor:
        """Each row's token: the argmax for greedy rows; a draw from its own generator after its warpers for
        sampled rows (rows sharing warpers are warped as one batch)."""
        tokens = scores.argmax(dim=-1)
        groups: dict[int, list[int]] = {}
        for j, row in enumerate(self.rows):
            if row.warpers is not None:
                groups.setdefault(id(row.warpers), []).append(j)
        for js in groups.values():
            index = torch.tensor(js, device=scores.device)
            probs = torch.softmax(self.rows[js[0]].warpers(None, scores[index]), dim=-1)
            tokens[index] = torch.cat([torch.multinomial(probs[k], 1, generator=self.rows[j].generator)
                                       for k, j in enumerate(js)])
        return tokens

    def remove(self, indices: Sequence[int]) -> None:
        """Drop the live rows ``indices`` (of ``drafts``) before the next step, e.g. for a client that went away;
        their caches are freed and their drafts keep what was decoded (``finish_reason`` None)."""
        drop = set(indices)
        keep = [j for j, row in enumerate(self.rows) if row.index not in drop]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        self.rows = [self.rows[j] for j in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.bank.device)
        self.state.select(index)
        self.state.trim()
        self.logprobs, self.weights, self.lengths = self.logprobs[:, index], self.weights[index], self.lengths[index]
        if self.seen is not None:
            self.seen = self.seen[index]


def _streamable(text: str, stops: Sequence[str], sent: int) -> int:
    """How much of an unfinished ``text`` is safe to show: hold back any tail that may yet grow into a stop
    string (which would be cut from the answer)."""
    ready = len(text)
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                ready = min(ready, len(text) - k)
                break
    return max(ready, sent)


# -- beam search ---------------------------------------------------------------------------------------------------

@dataclass
class _Beam:
    draft: Draft
    detok: Detokenizer
    score: float

    def extended(self, finisher: _Finisher, token: int, logprob: float, ref: float | None, score: float) -> _Beam:
        d = self.draft
        draft = Draft(list(d.ids), list(d.logprobs), list(d.ref_logprobs))
        detok = self.detok.copy()
        finisher.add(draft, detok, token, logprob, ref)
        return _Beam(draft, detok, score)


@torch.inference_mode()
def beam_search(steering: Steering, prompts: Sequence[str], config: GenerationConfig
                ) -> tuple[list[list[Draft]], list[list[int]]]:
    """Beam search on the policy's log-probs (after the constraints): the ``config.n`` best answers per prompt,
    and each prompt's token ids.

    A hypothesis scores ``sum log pi / length ** length_penalty``. Each prompt runs on its own, as in transformers:
    it is done once it holds ``num_beams`` finished answers and no live beam can still beat the worst of them
    (the exact bound, transformers' ``early_stopping="never"``), and its beams then leave the batch; so every
    prompt's result is the same alone and in any batch.
    """
    bank, beams, cfg = steering.bank, config.num_beams, config
    vocab, lp = bank.vocab_size, config.length_penalty
    state, logprobs = bank.start(prompts, config.max_new_tokens, steering.weights)
    n = len(prompts)
    prompt_ids = list(state.prompt_ids)
    index = torch.arange(n, device=bank.device).repeat_interleave(beams)
    state.select(index)
    logprobs, weights = logprobs[:, index], steering.weights.to(bank.device)[index]
    finisher = _Finisher(config, bank.eos_ids)
    procs = constraints(config, bank.eos_ids)
    seen = seen_tokens(state.prompt_ids, vocab, bank.device) if config.repetition_penalty != 1.0 else None
    start = _Beam(Draft(), Detokenizer(bank.tokenizer), 0.0)
    live = {b: [start] + [_Beam(start.draft, start.detok, -float("inf")) for _ in range(beams - 1)] for b in range(n)}
    done: dict[int, list[tuple[float, Draft]]] = {b: [] for b in range(n)}
    running = list(range(n))  # prompts still searching, in row-block order

    for step in range(cfg.max_new_tokens):
        lengths = torch.full((len(running) * beams,), step, device=bank.device)
        policy, scores = policy_scores(steering, procs, StepContext(logprobs, weights, lengths, seen))
        beam_scores = torch.tensor([bm.score for b in running for bm in live[b]], dtype=torch.float64,
                                   device=bank.device)
        total = (beam_scores[:, None] + scores.double()).view(len(running), beams * vocab)
        top_scores, top_ids = total.topk(min(2 * beams, beams * vocab), dim=-1)
        rows = torch.arange(len(running), device=bank.device)[:, None] * beams + top_ids // vocab
        tokens = top_ids % vocab
        picked = [top_scores, top_ids.double(), policy[rows, tokens].double()]
        if steering.reference is not None:
            picked.append(logprobs[steering.reference][rows, tokens].double())
        host = torch.stack(picked).tolist()
        origin, next_tokens, still = [], [], []
        for k, b in enumerate(running):
            refs = host[3][k] if steering.reference is not None else [None] * len(host[0][k])
            candidates = list(zip(host[0][k], host[1][k], host[2][k], refs, strict=True))
            chosen = _choose(live[b], done[b], finisher, beams, vocab, lp, candidates)
            if _prompt_done(done[b], beams, chosen[0][1].score if chosen else -float("inf"), step + 1,
                            cfg.max_new_tokens, lp):
                continue
            while len(chosen) < beams:  # tiny vocabularies: pad with dead beams
                chosen.append((0, _Beam(start.draft, start.detok, -float("inf"))))
            live[b] = [c for _, c in chosen]
            still.append(b)
            origin += [k * beams + beam for beam, _ in chosen]
            next_tokens += [c.draft.ids[-1] if c.draft.ids else 0 for _, c in chosen]
        if step + 1 == cfg.max_new_tokens or not still:
            running = still
            break
        index = torch.tensor(origin, device=bank.device)
        state.select(index)
        weights = weights[index]
        token_tensor = torch.tensor(next_tokens, device=bank.device)
        if seen is not None:
            seen = seen[index]
            seen[torch.arange(len(index), device=index.device), token_tensor] = True
        running = still
        logprobs = state.step(token_tensor)
    for b in running:  # out of length: live beams end here
        for bm in live[b]:
            if bm.score > -float("inf") and bm.draft.ids:
                bm.draft.finish_reason = bm.draft.finish_reason or "length"
                _add_done(done[b], beams, bm.score / len(bm.draft.ids) ** lp, bm.draft)
    return [[d for _, d in sorted(done[b], key=lambda pair: -pair[0])[: cfg.n]] for b in range(n)], prompt_ids


def _choose(live: list[_Beam], done: list[tuple[float, Draft]], finisher: _Finisher, beams: int, vocab: int,
            lp: float, candidates: list[tuple[float, float, float, float | None]]) -> list[tuple[int, _Beam]]:
    """One prompt's next beams from its best candidates ``(score, flat id, log-prob, ref log-prob)``, best first;
    candidates that end (EOS, stop) go to ``done`` instead, as in transformers only from the top ``beams``."""
    chosen: list[tuple[int, _Beam]] = []
    for rank, (score, flat, logprob, ref) in enumerate(candidates):
        if score == -float("inf"):
            break
        beam, token = divmod(int(flat), vocab)
        candidate = live[beam].extended(finisher, token, logprob, ref, score)
        if candidate.draft.finish_reason in ("eos", "stop"):
            if rank < beams:
                _add_done(done, beams, score / len(candidate.draft.ids) ** lp, candidate.draft)
        else:
            chosen.append((beam, candidate))
        if len(chosen) == beams:
            break
    return chosen


def _add_done(done: list[tuple[float, Draft]], beams: int, score: float, draft: Draft) -> None:
    """Keep the ``beams`` best finished hypotheses."""
    if len(done) < beams:
        done.append((score, draft))
        return
    worst = min(range(len(done)), key=lambda i: done[i][0])
    if score > done[worst][0]:
        done[worst] = (score, draft)


def _prompt_done(done: list[tuple[float, Draft]], beams: int, best_live: float, length: int, max_length: int,
                 lp: float) -> bool:
    """No live beam can beat the worst of ``beams`` finished ones: its sum of log-probs only falls, so its best
    normalised score is at the longest length when ``lp > 0``, else at the current one."""
    if best_live == -float("inf"):
        return True
    if len(done) < beams:
        return False
    attainable = best_live / (max_length if lp > 0 else length) ** lp
    return min(s for s, _ in done) >= attainable


__all__ = ["Combine", "DecodeSession", "Detokenizer", "Draft", "MinNewTokens", "Processor",
           "RepetitionPenalty", "SelectRole", "StepContext", "Steering", "beam_search", "constraints", "warpers"]
