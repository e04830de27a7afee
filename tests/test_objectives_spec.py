"""Spec parsing, the registry, ObjectiveSet, and every bad input with its message."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from polyalign.errors import ObjectiveError
from polyalign.objectives import ObjectiveSet, available, build, check_scores, parse_spec, register
from polyalign.objectives.spec import _REGISTRY, format_spec, split_spec

PLUGINS = "tests.objective_plugins"
ROUND_TRIP = [
    "sentiment",
    "length:unit=words,target=30",
    "length:target=30,name=length30",
    "concise:unit=chars",
    "rouge:variant=rouge1,measure=recall",
    "readability:metric=gunning_fog",
    "safety:measure=count",
    f"python:{PLUGINS}:word_count",
    f"python:{PLUGINS}:word_count,higher_is_better=false,name=wc",
    "sentiment:range=-1..1",
    "length:range=0..50,clip=true",
]


@pytest.mark.parametrize("spec", ROUND_TRIP)
def test_spec_round_trip(spec):
    first = parse_spec(spec)
    again = parse_spec(first.spec)
    assert again.spec == first.spec and again.name == first.name
    assert again.higher_is_better == first.higher_is_better
    responses = ["short one", "a much longer response with more words in it", ""]
    references = ["one short", "longer words", "x"]
    torch.testing.assert_close(again.score(["p"] * 3, responses, references),
                               first.score(["p"] * 3, responses, references))


def test_objective_set_to_spec_round_trips():
    objectives = build(ROUND_TRIP[:5])
    assert build(objectives.to_spec()).to_spec() == objectives.to_spec()
    assert objectives.names == ["sentiment", "length", "length30", "concise", "rouge"]
    assert len(objectives) == 5 and objectives["length30"].spec == "length:target=30,name=length30"


def test_build_accepts_one_string_separated_by_semicolons_or_newlines():
    assert build("sentiment; length:target=3\nconcise").names == ["sentiment", "length", "concise"]


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9_./-]{1,12}", fullmatch=True), max_size=4),
       st.none() | st.from_regex(r"[A-Za-z0-9_./:-]{1,12}", fullmatch=True).filter(lambda s: "=" not in s))
def test_split_and_format_are_inverse(params, positional):
    spec = format_spec("kind", positional, params)
    assert split_spec(spec) == ("kind", positional, params)


@pytest.mark.parametrize(("spec", "message"), [
    ("sentimnt", "unknown objective 'sentimnt'; available: concise, hf, length"),
    ("", "objective spec '' is empty"),
    (":x", "does not start with a kind"),
    ("sentiment,range=0..1", "write it as 'sentiment:range=0..1'"),
    ("length:unit=miles", "objective 'length': unit='miles' is invalid: Input should be 'words', 'tokens' or 'chars'"),
    ("length:target=abc", "objective 'length': target='abc' is invalid: Input should be a valid integer"),
    ("length:target=-3", "target=-3 must be >= 0"),
    ("length:colour=red", "objective 'length' has no parameter 'colour'; its parameters are unit, target, tokenizer"),
    ("length:target=3,target=4", "parameter 'target' is given twice"),
    ("length:target=3,oops", "'oops' in objective spec 'length:target=3,oops' is not KEY=VALUE"),
    ("length:target=3,,unit=words", "is not KEY=VALUE"),
    ("sentiment:extra", "objective 'sentiment' takes no arguments, got 'extra'"),
    ("hf", "objective 'hf' needs parameter 'model', e.g. 'hf:MODEL'"),
    ("sentiment:range=1", "range '1' is not LOW..HIGH"),
    ("sentiment:range=1..1", "has zero width"),
    ("sentiment:clip=true", "clip= in spec 'sentiment:clip=true' only applies with range=LOW..HIGH"),
    ("sentiment:name=9bad", "objective name '9bad'"),
    ("python:nodots", "must be MODULE:FUNCTION"),
    ("python:no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
    (f"python:{PLUGINS}:missing", "has no attribute 'missing'"),
    (f"python:{PLUGINS}:NOT_CALLABLE", "is a int, not a callable"),
    ("rouge:stemmer=maybe", "stemmer='maybe' is invalid: Input should be a valid boolean"),
])
def test_bad_specs_have_clear_errors(spec, message):
    with pytest.raises(ObjectiveError) as info:
        parse_spec(spec)
    assert message in str(info.value)


def test_duplicate_names_are_an_error():
    with pytest.raises(ObjectiveError, match="objective name 'sentiment' appears twice; give one of them another name"):
        build(["sentiment", "sentiment:range=-1..1"])
    assert build(["sentiment", "sentiment:name=mood"]).names == ["sentiment", "mood"]


def test_empty_set_is_an_error():
    with pytest.raises(ObjectiveError, match="no objectives given"):
        build([])


def test_python_objective_batched_reference_and_per_row():
    prompts, responses = ["ab", "abc"], ["one two three", "four"]
    assert build([f"python:{PLUGINS}:word_count"]).score(prompts, responses)[:, 0].tolist() == [3.0, 1.0]
    overlap = build([f"python:{PLUGINS}:overlap"])
    assert overlap.names == ["overlap"]
    assert overlap.score(prompts, responses, ["two", "five"])[:, 0].tolist() == [1.0, 0.0]
    per_row = build([f"python:{PLUGINS}:one_row,batched=false"])
    assert per_row.score(prompts, responses)[:, 0].tolist() == [11.0, 1.0]


@pytest.mark.parametrize(("function", "message"), [
    ("wrong_shape", "objective 'wrong_shape' returned shape (5, 2); expected (5,): one score per response"),
    ("nan_in_row_two", "objective 'nan_in_row_two' returned nan for row 2; scores must be finite"),
    ("not_numbers", "objective 'not_numbers' returned list, not a sequence of numbers"),
])
def test_callable_outputs_are_validated(function, message):
    objective = parse_spec(f"python:{PLUGINS}:{function}")
    with pytest.raises(ObjectiveError) as info:
        objective.score(["p"] * 5, ["r"] * 5)
    assert message in str(info.value)


def test_set_reports_the_global_row_across_batches():
    objectives = build(["sentiment", f"python:{PLUGINS}:nan_when_bad"])
    with pytest.raises(ObjectiveError, match="'nan_when_bad' returned nan for row 3; scores must be finite") as info:
        objectives.score(["p"] * 5, ["a", "b", "c", "bad", "e"], batch_size=2)
    assert info.value.row == 3


def test_check_scores_accepts_lists_arrays_and_tensors_and_rejects_inf():
    assert check_scores("x", [1, 2], 2).dtype == torch.float32
    assert check_scores("x", torch.ones(3, dtype=torch.float64), 3).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ObjectiveError, match="returned inf for row 1"):
        check_scores("x", [0.0, float("inf")], 2)


def test_empty_responses_and_empty_batches_are_scored():
    objectives = build(["sentiment", "length", "readability", "safety", "concise"])
    scores = objectives.score(["", "hi"], ["", ""])
    assert scores.shape == (2, 5) and torch.isfinite(scores).all()
    assert objectives.score([], []).shape == (0, 5)


@pytest.mark.parametrize(("args", "message"), [
    ((["a"], ["x", "y"]), "got 1 prompts but 2 responses"),
    ((["a"], ["x"], ["r", "s"]), "got 2 references for 1 responses"),
    ((["a", 3], ["x", "y"]), "prompt in row 1 is int, not a string"),
    ((["a"], [None]), "response in row 0 is NoneType, not a string"),
])
def test_bad_inputs_to_score(args, message):
    with pytest.raises(ObjectiveError, match=message.replace("(", r"\(")):
        build(["sentiment"]).score(*args)


def test_objects_built_in_code_have_no_spec():
    from polyalign.objectives.text import Sentiment

    with pytest.raises(ObjectiveError, match="was built in code, not from a spec"):
        ObjectiveSet([Sentiment()]).to_spec()


class Shouty:
    """Share of upper-case letters."""

    def __init__(self, minimum: int = 1):
        self.name, self.higher_is_better, self.minimum = "shouty", False, minimum

    def score(self, prompts, responses, references=None):
        return torch.tensor([sum(c.isupper() for c in r) / max(len(r), self.minimum) for r in responses])


def test_register_a_plugin_kind():
    register("shouty", Shouty)
    try:
        assert available()["shouty"] == "Share of upper-case letters."
        objective = parse_spec("shouty:minimum=10")
        assert objective.minimum == 10 and objective.spec == "shouty:minimum=10"
        assert objective.score([""], ["ABcd"]).tolist() == [pytest.approx(0.2)]
        register("shouty", Shouty)  # same factory again: fine
        with pytest.raises(ObjectiveError, match="objective kind 'shouty' is already registered"):
            register("shouty", lambda: None)
        with pytest.raises(ObjectiveError, match="must be a letter"):
            register("bad name", Shouty)
    finally:
        _REGISTRY.pop("shouty", None)


def test_entry_point_plugins_are_found(monkeypatch):
    import importlib.metadata as metadata

    entry = metadata.EntryPoint("shouty_ep", "tests.test_objectives_spec:Shouty", "polyalign.objectives")
    broken = metadata.EntryPoint("broken_ep", "no_such_module_xyz:f", "polyalign.objectives")
    real = metadata.entry_points

    def fake(**kwargs):
        found = metadata.EntryPoints([entry, broken])
        if kwargs.get("group") == "polyalign.objectives":
            return found.select(**{k: v for k, v in kwargs.items() if k != "group"})
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", fake)
    try:
        assert "shouty_ep" in available() and "broken_ep" not in available()
        assert parse_spec("shouty_ep").name == "shouty"
        with pytest.raises(ObjectiveError, match="plugin objective 'broken_ep' .* failed to load"):
            parse_spec("broken_ep")
    finally:
        _REGISTRY.pop("shouty_ep", None)
