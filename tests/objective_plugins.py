"""Callables for the python: objective tests (imported by path, like a user's module)."""

import math


def word_count(prompts, responses):
    return [float(len(r.split())) for r in responses]


def overlap(prompts, responses, references):
    return [float(ref is not None and ref in r) for r, ref in zip(responses, references, strict=True)]


def one_row(prompt, response):
    return len(response) - len(prompt)


def wrong_shape(prompts, responses):
    return [[1.0, 2.0] for _ in responses]


def nan_in_row_two(prompts, responses):
    return [math.nan if i == 2 else 0.0 for i in range(len(responses))]


def not_numbers(prompts, responses):
    return ["high" for _ in responses]


NOT_CALLABLE = 3


def nan_when_bad(prompts, responses):
    return [math.nan if r == "bad" else 1.0 for r in responses]


def raises(prompts, responses):
    raise ZeroDivisionError("division by zero\n  and a second line the user does not need")


def raises_on_bad_row(prompt, response):
    if response == "bad":
        raise KeyError("no {score} for it")
    return 1.0


def no_arguments():
    return []


def four_arguments(prompts, responses, references, extra):
    return [0.0 for _ in responses]


def returns_none(prompts, responses):
    return None


def letter_e(prompts, responses):
    """The share of a response's characters that are the letter e (the training tests' learnable reward)."""
    return [r.count("e") / max(len(r), 1) for r in responses]
