"""The built-in objective kinds, registered on import. Each factory's parameters are its spec keys."""

from __future__ import annotations

from typing import Literal

from polyalign.objectives.neural import Classifier, Relevance
from polyalign.objectives.python import PythonObjective
from polyalign.objectives.spec import register
from polyalign.objectives.text import Length, Lexicon, Readability, Rouge, Sentiment


def length(unit: Literal["words", "tokens", "chars"] = "words", target: int | None = None,
           tokenizer: str | None = None) -> Length:
    """Response length (unit=words|tokens|chars); with target=N, -|length - N|."""
    return Length(unit, target, tokenizer)


def concise(unit: Literal["words", "tokens", "chars"] = "words", tokenizer: str | None = None) -> Length:
    """Negative response length: shorter is better (unit=words|tokens|chars)."""
    return Length(unit, None, tokenizer, negate=True)


def sentiment() -> Sentiment:
    """VADER compound sentiment of the response, in [-1, 1]."""
    return Sentiment()


def readability(metric: str = "flesch_reading_ease") -> Readability:
    """textstat readability (metric=flesch_reading_ease, or a grade level where lower is easier)."""
    return Readability(metric)


def rouge(variant: Literal["rouge1", "rouge2", "rougeL", "rougeLsum"] = "rougeLsum",
          measure: Literal["fmeasure", "precision", "recall"] = "fmeasure", stemmer: bool = True) -> Rouge:
    """ROUGE-Lsum F1 of the response against the row's reference, in [0, 1]."""
    return Rouge(variant, measure, stemmer)


def relevance(model: str | None = None, against: Literal["prompt", "reference"] = "prompt",
              device: str = "auto", max_length: int = 256) -> Relevance:
    """Cosine similarity of prompt and response embeddings (all-MiniLM-L6-v2), in [-1, 1]."""
    return Relevance(model, against, device, max_length)


def profanity(lexicon: str | None = None, measure: Literal["rate", "count"] = "rate") -> Lexicon:
    """Share of words that are profanity (shipped LDNOOBW subset or lexicon=FILE); lower is better."""
    return Lexicon("profanity", lexicon, measure)


def safety(lexicon: str | None = None, measure: Literal["rate", "count"] = "rate") -> Lexicon:
    """1 - share of profane words (rate), or -matches (count): the profanity lexicon as a reward."""
    return Lexicon("safety", lexicon, measure, negate=True)


def hf(model: str, label: str | None = None, output: Literal["auto", "logit", "prob", "logprob"] = "auto",
       chat_template: bool | None = None, device: str = "auto", dtype: str = "auto", max_length: int = 512,
       trust_remote_code: bool = False, revision: str | None = None) -> Classifier:
    """A sequence-classification reward model by hub id or path (scalar head, or label=NAME)."""
    return Classifier(model, label, output, chat_template, "prompt", device, dtype, max_length,
                      trust_remote_code, revision, name="hf")


def nli(model: str, label: str = "entailment", output: Literal["prob", "logprob", "logit"] = "prob",
        premise: Literal["prompt", "reference"] = "prompt", device: str = "auto", dtype: str = "auto",
        max_length: int = 512, trust_remote_code: bool = False, revision: str | None = None) -> Classifier:
    """Probability that the prompt (or premise=reference) entails the response, with any NLI model."""
    return Classifier(model, label, output, False, premise, device, dtype, max_length, trust_remote_code,
                      revision, name="nli")


def python(function: str, higher_is_better: bool = True, batched: bool = True) -> PythonObjective:
    """A Python callable by import path: python:mypkg.module:function."""
    return PythonObjective(function, higher_is_better, batched)


for _factory in (length, concise, sentiment, readability, rouge, relevance, profanity, safety, hf, nli, python):
    register(_factory.__name__, _factory)
