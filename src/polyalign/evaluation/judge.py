"""Pairwise judging by a local causal LM (CLP paper, Appendix D.1).

The judge reads a prompt and two responses labelled A and B and we compare its next-token log-probs of
the option letters ("A", "B" and, with ties allowed, "C" for "equally good"). Every pair is asked in both
orders; a comparison counts only when the two verdicts agree once the swap is undone. Ties and the
letter C are our addition; the default prompts are paraphrases of the paper's conciseness and quality
prompts, written for general responses rather than summaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from polyalign.errors import ConfigError

Verdict = Literal["A", "B", "tie"]
Outcome = Literal["win", "tie", "loss", "inconsistent"]

CRITERIA = {
    "conciseness": (
        "You compare two responses to the same request. Judge which response is more concise: it says what "
        "is needed to answer the request in fewer words, without padding, repetition or needless detail, "
        "while still answering it. Length alone does not make a response better if it leaves out the answer."
    ),
    "quality": (
        "You compare two responses to the same request. Judge which response is of higher overall quality: "
        "more accurate, more helpful and relevant to the request, clearer and better written. Do not let the "
        "order of the responses or their length sway you."
    ),
}
QUESTION = (
    "Request:\n{prompt}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Which response is better on this criterion? Answer with a single letter: A or B{tie}."
)
TIE_CLAUSE = ", or C if they are equally good"
LETTERS = {"A": "A", "B": "B", "tie": "C"}


class JudgeModel(Protocol):
    """Anything that gives, per judge prompt, the log-probs of a fixed list of single-letter answers."""

    def option_logprobs(self, system: str, questions: Sequence[str], options: Sequence[str]) -> torch.Tensor:
        """``[len(questions), len(options)]`` log-probs of each option as the answer's first token."""
        ...


def verdicts(judge: JudgeModel, criterion: str, prompts: Sequence[str], first: Sequence[str],
             second: Sequence[str], tie: bool = True) -> list[Verdict]:
    """The judge's pick for each (prompt, A=first, B=second): the option with the highest log-prob."""
    system = criterion_text(criterion)
    choices: list[Verdict] = ["A", "B", "tie"] if tie else ["A", "B"]
    questions = [QUESTION.format(prompt=p, a=a, b=b, tie=TIE_CLAUSE if tie else "")
                 for p, a, b in zip(prompts, first, second, strict=True)]
    if not questions:
        return []
    logprobs = judge.option_logprobs(system, questions, [LETTERS[c] for c in choices])
    if tuple(logprobs.shape) != (len(questions), len(choices)):
        raise ConfigError(f"judge returned log-probs of shape {tuple(logprobs.shape)}, "
                          f"expected {(len(questions), len(choices))}")
    return [choices[i] for i in logprobs.argmax(dim=-1).tolist()]


def compare(judge: JudgeModel, criterion: str, prompts: Sequence[str], responses_x: Sequence[str],
            responses_y: Sequence[str], tie: bool = True) -> list[Outcome]:
    """Outcome for x against y per prompt, asking both orders; disagreeing orders are 'inconsistent'."""
    n = len(prompts)
    if not len(responses_x) == len(responses_y) == n:
        raise ConfigError(f"got {n} prompts, {len(responses_x)} and {len(responses_y)} responses to compare")
    both = verdicts(judge, criterion, [*prompts, *prompts], [*responses_x, *responses_y],
                    [*responses_y, *responses_x], tie)
    return [outcome(a, b) for a, b in zip(both[:n], both[n:], strict=True)]


def outcome(x_first: Verdict, x_second: Verdict) -> Outcome:
    """Combine the verdicts with x shown as A, then with x shown as B."""
    unswapped = {"A": "win", "B": "loss", "tie": "tie"}[x_first]
    swapped = {"A": "loss", "B": "win", "tie": "tie"}[x_second]
    return unswapped if unswapped == swapped else "inconsistent"


def criterion_text(criterion: str) -> str:
    """A named default criterion, or the criterion text itself if it is not a known name."""
    if criterion in CRITERIA:
        return CRITERIA[criterion]
    if len(criterion.split()) < 4:
        raise ConfigError(f"unknown judge criterion {criterion!r}: use one of {sorted(CRITERIA)} or write the "
                          "instruction for the judge in full")
    return criterion


@dataclass
class LMJudge:
    """A causal LM as judge: chat template if the tokenizer has one, left-padded batches, one forward each."""

    model: object
    tokenizer: object
    batch_size: int = 8
    max_length: int = 2048
    name: str = "judge"

    def __post_init__(self) -> None:
        # Left padding and left truncation keep the end of the prompt, where the answer is asked for. The
        # tokenizer may be shared (e.g. with decoding experts): configure a private copy, never the shared one.
        from polyalign.models import configure_tokenizer

        self.tokenizer = configure_tokenizer(self.tokenizer, padding_side="left", truncation_side="left")

    def option_ids(self, options: Sequence[str]) -> list[list[int]]:
        """Token ids of each option, bare and with a leading space where that is one token; none shared."""
        ids = []
        for option in options:
            encoded = [self.tokenizer.encode(v, add_special_tokens=False) for v in (option, " " + option)]
            found = {e[0] for e in encoded if len(e) == 1} or {encoded[0][0]}
            ids.append(sorted(found))
        flat = [i for group in ids for i in group]
        if len(flat) != len(set(flat)):
            raise ConfigError(f"the judge tokenizer maps options {list(options)} to shared tokens {ids}; "
                              "use a judge model whose tokenizer has distinct letter tokens")
        return ids

    def render(self, system: str, question: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{system}\n\n{question}\nAnswer:"

    @torch.no_grad()
    def option_logprobs(self, system: str, questions: Sequence[str], options: Sequence[str]) -> torch.Tensor:
        ids = self.option_ids(options)
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        if tok.pad_token_id is None:
            raise ConfigError("the judge tokenizer has no pad token; set tokenizer.pad_token")
        out = []
        for start in range(0, len(questions), self.batch_size):
            texts = [self.render(system, q) for q in questions[start:start + self.batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length,
                      add_special_tokens=False)
            logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            out.append(torch.stack([torch.logsumexp(logprobs[:, group], dim=-1) for group in ids], dim=-1).cpu())
        return torch.cat(out)


def load_judge(spec: str, device: str | None = None, batch_size: int = 8) -> LMJudge:
    """A judge from a model spec (the embedded default, a hub id, a local dir, a .gguf path)."""
    from polyalign.models import load_model, load_tokenizer

    loaded = load_model(spec, device=device)
    tokenizer = load_tokenizer(spec, padding_side="left", truncation_side="left")  # cached, shared by judges
    return LMJudge(loaded.model, tokenizer, batch_size=batch_size, name=getattr(loaded, "name", spec))
