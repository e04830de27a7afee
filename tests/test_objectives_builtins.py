"""Built-in text objectives on fixed strings with known values or orderings."""

from __future__ import annotations

import pytest
import torch

from polyalign.errors import ObjectiveError
from polyalign.objectives import build, parse_spec


def score(spec: str, responses, prompts=None, references=None) -> list[float]:
    prompts = prompts or [""] * len(responses)
    return build([spec]).score(prompts, responses, references)[:, 0].tolist()


def test_length_words_chars_and_target():
    responses = ["one two three", "", "a b c d e f"]
    assert score("length", responses) == [3.0, 0.0, 6.0]
    assert score("length:unit=chars", responses) == [13.0, 0.0, 11.0]
    assert score("length:target=4", responses) == [-1.0, -4.0, -2.0]
    assert score("concise", responses) == [-3.0, 0.0, -6.0]


def test_length_tokens_uses_the_given_tokenizer(tiny_models, tiny_tokenizer):
    responses = ["the quick brown fox", "paris is lovely."]
    expected = [float(len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"])) for r in responses]
    assert score(f"length:unit=tokens,tokenizer={tiny_models[0]}", responses) == expected


def test_length_tokens_without_tokenizer_is_an_error():
    with pytest.raises(ObjectiveError, match="unit=tokens needs tokenizer="):
        parse_spec("length:unit=tokens")


def test_concise_rejects_target():
    with pytest.raises(ObjectiveError, match="objective 'concise' has no parameter 'target'"):
        parse_spec("concise:target=3")


def test_sentiment_orders_positive_neutral_negative():
    pos, neutral, neg = score("sentiment", ["I love this, wonderful!", "", "I hate this, awful."])
    assert pos > 0.5 and neutral == 0.0 and neg < -0.5


def test_readability_prefers_plain_words():
    easy, hard = score("readability", [
        "The cat sat on the mat. It was a good cat.",
        "Notwithstanding considerable institutional heterogeneity, comprehensive evaluation methodologies "
        "remain indispensable.",
    ])
    assert easy > 80 > 0 > hard
    grade = build(["readability:metric=flesch_kincaid_grade"])
    assert grade[0].higher_is_better is False


def test_readability_scores_text_without_words():
    assert score("readability", ["", "...!?"]) == [0.0, 0.0]


def test_readability_unknown_metric():
    with pytest.raises(ObjectiveError, match="unknown metric 'fog'; use one of flesch_reading_ease"):
        parse_spec("readability:metric=fog")


def test_rouge_lsum_known_values():
    refs = ["The cat sat on the mat. It was happy.", "The cat sat on the mat.", "anything"]
    same, partial, empty = score("rouge", ["The cat sat on the mat. It was happy.", "The cat sat.", ""],
                                 references=refs)
    assert same == pytest.approx(1.0)
    # LCS 3 tokens; precision 3/3, recall 3/6 -> F1 2/3
    assert partial == pytest.approx(2 / 3, abs=1e-6)
    assert empty == 0.0


def test_rouge_without_reference_is_a_clear_error():
    with pytest.raises(ObjectiveError, match="objective 'rouge' needs a reference for every response"):
        score("rouge", ["x"])
    with pytest.raises(ObjectiveError, match="row 1 has none"):
        score("rouge", ["x", "y"], references=["x", None])


def test_profanity_and_safety_are_complements():
    responses = ["What a lovely day.", "This is shit.", "fucking hell, son of a bitch", ""]
    profane = score("profanity", responses)
    safe = score("safety", responses)
    assert profane == pytest.approx([0.0, 1 / 3, 5 / 6, 0.0])  # son of a bitch covers 4 words
    assert safe == pytest.approx([1 - p for p in profane])
    assert score("profanity:measure=count", responses) == [0.0, 1.0, 3.0, 0.0]  # fucking, son of a bitch, bitch
    assert build(["profanity", "safety"]).higher_is_better == [False, True]


def test_custom_lexicon(tmp_path):
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("# comment\nbanana\nred apple\n")
    assert score(f"profanity:lexicon={lexicon}", ["a Banana and a red apple", "an apple"]) == [0.5, 0.0]  # 3 of 6 words
    with pytest.raises(ObjectiveError, match="cannot read lexicon"):
        parse_spec(f"profanity:lexicon={tmp_path / 'missing.txt'}")


def test_relevance_ranks_on_topic_above_off_topic():
    prompts = ["How do I bake sourdough bread?"] * 3
    on, off, empty = score("relevance", [
        "Mix flour, water and starter, let the dough rise overnight, then bake it in a hot oven.",
        "The stock market closed higher today as technology shares rallied.",
        "",
    ], prompts=prompts)
    assert on > off + 0.3 and -1.0 <= empty <= 1.0


def test_relevance_against_reference_and_embedding_norm():
    objective = parse_spec("relevance:against=reference")
    s = objective.score(["ignored"], ["a dog runs in the park"], ["a dog runs in the park"])
    assert s.item() == pytest.approx(1.0, abs=1e-5)
    assert torch.linalg.norm(objective.embed(["hello", "world"]), dim=-1).tolist() == pytest.approx([1.0, 1.0])


def test_scores_are_deterministic_and_batch_invariant():
    objectives = build(["sentiment", "length", "relevance", "readability"])
    prompts = [f"question {i} about cats" for i in range(7)]
    responses = [f"Cats are great pets number {i}. " * (i % 3) for i in range(7)]
    a = objectives.score(prompts, responses, batch_size=3)
    b = objectives.score(prompts, responses, batch_size=32)
    assert a.dtype == torch.float32 and a.shape == (7, 4)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
