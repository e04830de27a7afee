"""python: objectives whose function misbehaves: one ObjectiveError naming the spec and the function."""

from __future__ import annotations

import pytest

from polyalign.errors import ObjectiveError
from polyalign.objectives import build, parse_spec
from polyalign.objectives.io import read_jsonl
from polyalign.objectives.scoring import score_rows

PLUGINS = "tests.objective_plugins"


def test_an_exception_is_one_line_naming_spec_and_function():
    objective = parse_spec(f"python:{PLUGINS}:raises")
    with pytest.raises(ObjectiveError) as info:
        objective.score(["p"], ["r"])
    message = str(info.value)
    assert message == (f"objective 'raises' (spec python:{PLUGINS}:raises, function {PLUGINS}:raises) raised "
                       "ZeroDivisionError: division by zero")
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # kept for debugging


def test_an_exception_in_one_row_names_the_row_of_the_set_and_of_the_file(tmp_path):
    objectives = build([f"python:{PLUGINS}:raises_on_bad_row,batched=false"])
    with pytest.raises(ObjectiveError, match=r"raised KeyError: 'no \{score\} for it' on row 3$") as info:
        objectives.score(["p"] * 4, ["a", "b", "c", "bad"], batch_size=2)
    assert isinstance(info.value.__cause__, KeyError)
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(['{"prompt": "p", "response": "ok"}'] * 2 + ['{"prompt": "p", "response": "bad"}']))
    with pytest.raises(ObjectiveError, match=r"on row 2 \(input line 3\)") as info:
        score_rows(objectives, read_jsonl(path))
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize("function", ["no_arguments", "four_arguments"])
def test_a_wrong_signature_is_refused_when_built(function):
    with pytest.raises(ObjectiveError, match=f"function {PLUGINS}:{function}\\(.*\\) cannot be called with "
                                             r"\(prompts, responses\[, references\]\)"):
        parse_spec(f"python:{PLUGINS}:{function}")


@pytest.mark.parametrize(("function", "problem"), [
    ("wrong_shape", "returned shape (3, 2)"),
    ("returns_none", "returned NoneType, not a sequence of numbers"),
    ("nan_in_row_two", "returned nan for row 2"),
])
def test_a_wrong_output_names_spec_and_function(function, problem):
    with pytest.raises(ObjectiveError) as info:
        build([f"python:{PLUGINS}:{function},name=mine"]).score(["p"] * 3, ["r"] * 3)
    message = str(info.value)
    assert problem in message and "objective 'mine'" in message
    assert f"spec python:{PLUGINS}:{function},name=mine" in message and f"function {PLUGINS}:{function}" in message
