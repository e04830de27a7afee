"""Test-only policy and objectives for the evaluation tests: deterministic, cheap, known answers."""

from __future__ import annotations

import torch

from polyalign.interface import Generation, GenerationConfig, check_prompts
from polyalign.weights import check_weights


class ToyPolicy:
    """Writes ``round(10 w_pos)`` times "good" then ``round(10 w_long)`` times "long" (by objective name, else by
    position); KL grows with |w_0 - 0.5|.

    Counts its generate calls, and records the configs it was given.
    """

    def __init__(self, objectives=("pos", "long"), kl: bool = True):
        self.objectives = list(objectives)
        self.kl = kl
        self.calls = 0
        self.configs: list[GenerationConfig | None] = []

    def generate(self, prompts, weights, alpha=None, config=None):
        prompts = check_prompts(prompts)
        w = check_weights(weights, len(prompts), self.objectives)
        self.calls += 1
        self.configs.append(config)
        out = []
        for i, (prompt, row) in enumerate(zip(prompts, w.tolist(), strict=True)):
            by_name = dict(zip(self.objectives, row, strict=True))
            good, long = (by_name["pos"], by_name["long"]) if {"pos", "long"} <= set(by_name) else row[:2]
            words = ["good"] * max(0, round(10 * good)) + ["long"] * max(0, round(10 * long)) + [f"p{i}"]
            n = len(words)
            logprobs = [-1.0] * n
            ref = [-1.0 - abs(row[0] - 0.5) - 0.01 * i] * n
            out.append(Generation(prompt=prompt, text=" ".join(words), token_ids=list(range(n)), weights=row,
                                  finish_reason="length", logprobs=logprobs if self.kl else None,
                                  ref_logprobs=ref if self.kl else None, alpha=alpha))
        return out


class ToyObjectives:
    """``pos`` = number of "good" words / 10; ``long`` = number of "long" words / 10 (both higher is better)."""

    names = ["pos", "long"]
    higher_is_better = [True, True]

    def score(self, prompts, responses, references=None, batch_size=32, progress=False):
        return torch.tensor([[r.split().count("good") / 10, r.split().count("long") / 10] for r in responses])


def make_toy(kl: bool = True) -> ToyPolicy:
    """Factory for the ``python`` method kind."""
    return ToyPolicy(kl=kl)


class FixedToy(ToyPolicy):
    """A 'plain model': the toy policy at fixed weights, whatever it is asked (the config says single_point)."""

    def generate(self, prompts, weights, alpha=None, config=None):
        return super().generate(prompts, [0.5, 0.5], alpha, config)


def make_plain() -> ToyPolicy:
    return FixedToy()


BUILT: list[str] = []


def make_counted(kl: bool = True) -> ToyPolicy:
    """Like :func:`make_toy`, and remembers that it was built (to prove a re-run only redraws)."""
    BUILT.append("toy")
    return ToyPolicy(kl=kl)


class ShorterJudge:
    """A stub judge that always prefers the shorter response (ties on equal length): order-independent."""

    name = "shorter-stub"

    def option_logprobs(self, system, questions, options):
        rows = []
        for q in questions:
            a = q.split("Response A:\n", 1)[1].split("\n\nResponse B:\n", 1)[0]
            b = q.split("\n\nResponse B:\n", 1)[1].split("\n\nWhich response", 1)[0]
            pick = "A" if len(a) < len(b) else "B" if len(b) < len(a) else "C"
            rows.append([0.0 if o == pick else -3.0 for o in options])
        return torch.tensor(rows)
