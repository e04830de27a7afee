"""Judge: order swap and consistency with a scripted stub; the real LM judge path on a tiny random model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from polyalign.errors import ConfigError
from polyalign.evaluation.judge import CRITERIA, LMJudge, compare, outcome, verdicts


class ScriptedJudge:
    """Answers a fixed script of letters, in the order the questions arrive; records what it was asked."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.asked: list[tuple[str, str, list[str]]] = []

    def option_logprobs(self, system, questions, options):
        rows = []
        for q in questions:
            letter = self.script.pop(0)
            self.asked.append((system, q, list(options)))
            rows.append([0.0 if o == letter else -5.0 for o in options])
        return torch.tensor(rows)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [("A", "B", "win"), ("B", "A", "loss"), ("tie", "tie", "tie"), ("A", "A", "inconsistent"),
     ("B", "B", "inconsistent"), ("tie", "A", "inconsistent"), ("A", "tie", "inconsistent")],
)
def test_outcome_table(first, second, expected):
    assert outcome(first, second) == expected


def test_compare_asks_both_orders_and_counts_only_consistent():
    # prompt 0: x preferred in both orders; prompt 1: judge always says A (position bias); prompt 2: tie twice;
    # prompt 3: y preferred in both orders.
    judge = ScriptedJudge(["A", "A", "C", "B"] + ["B", "A", "C", "A"])
    prompts = ["p0", "p1", "p2", "p3"]
    xs, ys = ["x0", "x1", "x2", "x3"], ["y0", "y1", "y2", "y3"]
    assert compare(judge, "conciseness", prompts, xs, ys) == ["win", "inconsistent", "tie", "loss"]
    assert len(judge.asked) == 8 and not judge.script
    system, q0, options = judge.asked[0]
    assert system == CRITERIA["conciseness"] and options == ["A", "B", "C"]
    assert q0.index("Response A:\nx0") < q0.index("Response B:\ny0")
    _, q0_swapped, _ = judge.asked[4]
    assert q0_swapped.index("Response A:\ny0") < q0_swapped.index("Response B:\nx0")
    assert "or C if they are equally good" in q0


def test_compare_without_ties_and_custom_criterion():
    judge = ScriptedJudge(["B", "A"])
    text = "Which response is more polite to the user?"
    assert compare(judge, text, ["p"], ["x"], ["y"], tie=False) == ["loss"]
    assert judge.asked[0][0] == text and judge.asked[0][2] == ["A", "B"]
    assert "equally good" not in judge.asked[0][1]
    with pytest.raises(ConfigError, match="unknown judge criterion"):
        compare(judge, "politeness", ["p"], ["x"], ["y"])
    with pytest.raises(ConfigError, match="responses"):
        compare(judge, "quality", ["p"], ["x"], [])


@pytest.fixture(scope="module")
def tiny_judge(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models[0]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models[0])
    return LMJudge(model, tokenizer, batch_size=2)


def test_real_judge_logprobs_match_a_manual_forward(tiny_judge):
    questions = ["Request:\nhi\n\nResponse A:\nyes\n\nResponse B:\nno", "a much longer question " * 5, "short"]
    batched = tiny_judge.option_logprobs(CRITERIA["quality"], questions, ["A", "B", "C"])
    assert batched.shape == (3, 3) and torch.isfinite(batched).all() and (batched <= 0).all()
    ids = tiny_judge.option_ids(["A", "B", "C"])
    for k, q in enumerate(questions):  # unpadded, one at a time: the left padding must not change anything
        text = tiny_judge.render(CRITERIA["quality"], q)
        enc = tiny_judge.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_judge.model(**enc).logits[0, -1].float(), dim=-1)
        manual = torch.stack([torch.logsumexp(logprobs[g], dim=0) for g in ids])
        torch.testing.assert_close(batched[k], manual, atol=1e-4, rtol=1e-4)
    assert "<|im_start|>assistant" in tiny_judge.render("sys", "q")  # the chat template is used


def test_real_judge_compare_end_to_end(tiny_judge):
    prompts = ["what is the capital of france?", "tell me a story"]
    xs, ys = ["paris.", "a cat was happy."], ["paris is lovely, the capital of france", "the quick brown fox"]
    outcomes = compare(tiny_judge, "conciseness", prompts, xs, ys)
    assert len(outcomes) == 2 and set(outcomes) <= {"win", "tie", "loss", "inconsistent"}
    assert "tie" not in compare(tiny_judge, "quality", prompts, xs, ys, tie=False)
    picks = verdicts(tiny_judge, "quality", prompts, xs, ys)
    assert set(picks) <= {"A", "B", "tie"}


def test_real_judge_rejects_options_sharing_a_token(tiny_judge):
    with pytest.raises(ConfigError, match="shared tokens"):
        tiny_judge.option_ids(["Apple", "Apricot"])


def test_judge_leaves_a_shared_tokenizer_alone(tiny_models):
    from polyalign.evaluation.judge import load_judge
    from polyalign.models import load_model

    shared = load_model(str(tiny_models[0])).tokenizer
    before = shared.padding_side, shared.truncation_side
    judge = load_judge(str(tiny_models[0]))
    judge.option_logprobs("be fair", ["which one?"] * 3, ["A", "B"])
    assert (judge.tokenizer.padding_side, judge.tokenizer.truncation_side) == ("left", "left")
    assert (shared.padding_side, shared.truncation_side) == before and judge.tokenizer is not shared
    own = AutoTokenizer.from_pretrained(tiny_models[0])
    assert LMJudge(judge.model, own).tokenizer.truncation_side == "left" and own.truncation_side == "right"
