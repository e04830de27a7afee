"""Preference pairs: files (JSONL/JSON/CSV, text and chat messages), datasets, their errors, and pairs generated
from objectives: best against worst, ties and identical responses dropped and counted, deterministic under a seed."""

from __future__ import annotations

import json

import pytest
import torch

from polyalign.errors import ConfigError
from polyalign.preferences import (
    PreferencePair,
    generate_preferences,
    load_preferences,
    pair_best_worst,
    write_preferences,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_json_and_csv_read_the_same_pairs(tmp_path):
    rows = [{"prompt": "hi", "chosen": "hello there", "rejected": "go away", "extra": 1},
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    a = load_preferences(_jsonl(tmp_path / "p.jsonl", rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    b = load_preferences(tmp_path / "p.json")
    (tmp_path / "p.csv").write_text('prompt,chosen,rejected\nhi,hello there,go away\n"2+2?",4,5\n')
    c = load_preferences(str(tmp_path / "p.csv"))
    assert a == b == c == [PreferencePair("hi", "hello there", "go away"), PreferencePair("2+2?", "4", "5")]
    assert load_preferences(tmp_path / "p.jsonl", limit=1) == a[:1]


def test_chat_messages_and_whole_conversations(tmp_path):
    user = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]
    rows = [{"prompt": user, "chosen": [{"role": "assistant", "content": "hello"}], "rejected": "go away"},
            {"chosen": user + [{"role": "assistant", "content": "hello"}],
             "rejected": user + [{"role": "assistant", "content": "no"}]}]
    pairs = load_preferences(_jsonl(tmp_path / "c.jsonl", rows))
    assert pairs[0].messages == user and pairs[0].chosen == "hello" and pairs[0].rejected == "go away"
    assert pairs[1].messages == user and (pairs[1].chosen, pairs[1].rejected) == ("hello", "no")
    assert pairs[0].to_json()["prompt"] == user


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "p", "chosen": "a"}], "missing column(s) 'rejected'"),
    ([{"chosen": "a", "rejected": "b"}], "missing column(s) 'prompt'"),
    ([{"prompt": "p", "chosen": "same", "rejected": " same "}], "chosen and rejected are the same response"),
    ([{"prompt": "  ", "chosen": "a", "rejected": "b"}], "the prompt is empty"),
    ([{"prompt": "p", "chosen": "", "rejected": "b"}], "the chosen response is empty"),
    ([{"prompt": 3, "chosen": "a", "rejected": "b"}], "prompt must be text or a list of chat messages"),
    ([], "holds no pairs"),
])
def test_bad_rows_are_refused_naming_the_row(tmp_path, rows, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_preferences(_jsonl(tmp_path / "bad.jsonl", rows))


def test_bad_files_are_refused(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,chosen\nhi,hello\n")
    with pytest.raises(ConfigError, match="missing column.*'rejected' in the header"):
        load_preferences(tmp_path / "p.csv")
    (tmp_path / "p.txt").write_text("hi\n")
    with pytest.raises(ConfigError, match="must end in .jsonl, .json, .csv"):
        load_preferences(tmp_path / "p.txt")
    with pytest.raises(ConfigError, match="not an existing file|does not exist|missing|no such"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "p.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_preferences(tmp_path / "p.json")


def test_a_saved_hf_dataset_with_mapped_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"question": ["hi", "yo"], "good": ["hello", "hey"], "bad": ["no", "meh"]})
    data.save_to_disk(str(tmp_path / "ds"))
    pairs = load_preferences(f"hf:{tmp_path / 'ds'},prompt=question,chosen=good,rejected=bad")
    assert pairs == [PreferencePair("hi", "hello", "no"), PreferencePair("yo", "hey", "meh")]
    with pytest.raises(ConfigError, match="has no column"):
        load_preferences(f"hf:{tmp_path / 'ds'}")
    with pytest.raises(ConfigError, match="bad option"):
        load_preferences(f"hf:{tmp_path / 'ds'},colour=red")


def test_best_against_worst_with_ties_and_identical_responses_dropped():
    prompts = ["a", "b", "c", "d"]
    responses = [["x", "y", "z"], ["same", "same", "same"], ["p", "q", "r"], ["m", "n", "m"]]
    scores = torch.tensor([[0.1, 0.9, 0.9], [0.2, 0.2, 0.2], [0.5, 0.5, 0.5], [0.3, 0.3, 0.3]], dtype=torch.float64)
    scores[3] = torch.tensor([1.0, 0.0, 1.0])
    pairs, kept, stats = pair_best_worst(prompts, responses, scores)
    # a: the first of the best (y) against the worst; b: one text; c: a tie; d: best m against worst n
    assert pairs == [PreferencePair("a", "y", "x"), PreferencePair("d", "m", "n")]
    assert kept.tolist() == [[0.9, 0.1], [1.0, 0.0]]
    assert (stats.prompts, stats.pairs, stats.ties, stats.identical) == (4, 2, 1, 1)
    assert "1 ties and 1 identical" in stats.summary()


def test_generated_pairs_are_deterministic_under_a_seed(tiny_models, tmp_path):
    from polyalign.experts import Expert
    from polyalign.interface import GenerationConfig
    from polyalign.objectives import build
    from polyalign.policies.plain import Plain

    reference = Plain(Expert(str(tiny_models[0])))
    objectives = build(["length:unit=chars", "sentiment"])
    prompts = ["tell me a story", "hello world", "what is the capital of france?"]
    config = GenerationConfig(max_new_tokens=12)
    runs = [generate_preferences(reference, prompts, objectives, [1.0, 0.5], k=4, seed=s, generation=config)
            for s in (3, 3, 4)]
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]
    pairs, scores, stats = runs[0]
    assert stats.pairs == len(pairs) and stats.pairs + stats.ties + stats.identical == 3
    assert bool((scores[:, 0] > scores[:, 1]).all())
    # the chosen response really scores higher by the weighted objectives
    for pair, (hi, lo) in zip(pairs, scores.tolist(), strict=True):
        both = objectives.score([pair.prompt] * 2, [pair.chosen, pair.rejected]).double() @ torch.tensor([1.0, 0.5],
                                                                                                         dtype=torch.float64)
        assert both.tolist() == pytest.approx([hi, lo])
    path = write_preferences(tmp_path / "gen.jsonl", pairs, scores)
    assert load_preferences(path) == pairs
    assert json.loads(path.read_text().splitlines()[0])["chosen_score"] == pytest.approx(scores[0, 0].item())


def test_no_pairs_at_all_is_an_error_that_says_why(tiny_models):
    from polyalign.experts import Expert
    from polyalign.interface import GenerationConfig
    from polyalign.objectives import build
    from polyalign.policies.plain import Plain

    constant = build(["safety"])  # every response scores the same: all ties (or identical)
    with pytest.raises(ConfigError, match="no preference pairs: 0 pairs from 2 prompts"):
        generate_preferences(Plain(Expert(str(tiny_models[0]))), ["hi", "yo"], constant, k=2,
                             generation=GenerationConfig(max_new_tokens=4))
