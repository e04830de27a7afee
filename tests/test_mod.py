"""MOD on tiny random models: exactness against single models, DeRa and brute force."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from polyalign.combine import combine_logprobs
from polyalign.errors import ConfigError, ModelLoadError, WeightsError
from polyalign.experts import Expert, ModelBank, format_prompt
from polyalign.interface import GenerationConfig
from polyalign.models import load_model
from polyalign.policies import MOD

PROMPTS = ["hello world", "tell me a story about a happy cat, please"]
GREEDY = GenerationConfig(max_new_tokens=8)


def brute_force_logprobs(model_dir, prompt, generated, system=None):
    """Next-token log-probs after ``prompt + generated``, by a full forward with no cache and no padding."""
    loaded = load_model(str(model_dir))
    tok = loaded.tokenizer
    ids = tok(format_prompt(tok, prompt, system, True), add_special_tokens=False)["input_ids"] + generated
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0, -1, : len(tok)]
    return torch.log_softmax(logits.float(), -1)


def brute_force_decode(reference, experts, weights, divergence, prompt, steps):
    """Greedy MOD by brute force: recompute every model from scratch at every step, take the argmax."""
    generated, logprobs = [], []
    for _ in range(steps):
        ref = brute_force_logprobs(reference, prompt, generated) if reference is not None else None
        exp = torch.stack([brute_force_logprobs(e, prompt, generated) for e in experts])
        combined = combine_logprobs(ref, exp, torch.tensor(weights, dtype=torch.float32), divergence)
        token = int(combined.argmax())
        generated.append(token)
        logprobs.append(float(combined[token]))
        if token == 2:
            break
    return generated, logprobs


def test_unit_weight_reproduces_the_expert_greedy_output(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a, name="a"), Expert(b, name="b")], reference=Expert(ref))
    for i, model_dir in enumerate((a, b)):
        weights = [1.0 if j == i else 0.0 for j in range(2)]
        gens = mod.generate(PROMPTS, weights, config=GREEDY)
        loaded = load_model(model_dir)
        for prompt, gen in zip(PROMPTS, gens, strict=True):
            ids = loaded.tokenizer(format_prompt(loaded.tokenizer, prompt, None, True), add_special_tokens=False,
                                   return_tensors="pt")["input_ids"]
            out = loaded.model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=2, pad_token_id=0)
            assert gen.token_ids == out[0, ids.shape[1]:].tolist()


def test_reverse_kl_with_weights_summing_to_one_ignores_the_reference(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    experts = [Expert(a), Expert(b)]
    outputs = [
        [g.token_ids for g in MOD(experts, reference=r).generate(PROMPTS, [0.3, 0.7], config=GREEDY)]
        for r in (Expert(ref), Expert(a), None)
    ]
    assert outputs[0] == outputs[1] == outputs[2]


def test_one_expert_with_weight_not_one_is_dera(tiny_models):
    ref, a, _ = (str(p) for p in tiny_models)
    w = 1.7
    gen = MOD([Expert(a)], reference=Expert(ref)).generate(PROMPTS[0], [w], config=GREEDY)[0]
    generated = []
    for _ in range(len(gen.token_ids)):
        dera = (1 - w) * brute_force_logprobs(ref, PROMPTS[0], generated) + w * brute_force_logprobs(
            a, PROMPTS[0], generated
        )
        generated.append(int(dera.argmax()))
    assert gen.token_ids == generated


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "jsd", "jeffrey"])
def test_greedy_equals_brute_force_argmax_of_the_combined_distribution(tiny_models, divergence):
    ref, a, b = (str(p) for p in tiny_models)
    weights = [0.6, 0.8]
    gen = MOD([Expert(a), Expert(b)], reference=Expert(ref), divergence=divergence).generate(
        PROMPTS[1], weights, config=GREEDY
    )[0]
    tokens, logprobs = brute_force_decode(ref, [a, b], weights, divergence, PROMPTS[1], len(gen.token_ids))
    assert gen.token_ids == tokens
    assert gen.logprobs == pytest.approx(logprobs, abs=1e-4)
    assert gen.ref_logprobs is not None and len(gen.ref_logprobs) == len(tokens)


def test_negative_weights_reverse_kl(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    weights = [5.0, -4.0]  # the MOD paper's safety example
    gen = MOD([Expert(a), Expert(b)], reference=Expert(ref)).generate(PROMPTS[0], weights, config=GREEDY)[0]
    tokens, _ = brute_force_decode(ref, [a, b], weights, "reverse_kl", PROMPTS[0], len(gen.token_ids))
    assert gen.token_ids == tokens


def test_persona_rows_batched_equal_one_by_one(tiny_models):
    model = str(tiny_models[1])
    personas = [Expert(model, system_prompt="be terse and brief."), Expert(model, system_prompt="be warm, kind!")]
    together = ModelBank(personas)
    assert len(together.groups) == 1  # one forward per step for both rows
    state, lp = together.start(PROMPTS)
    tokens = lp[0].argmax(-1)
    lp_next = state.step(tokens)
    for r, persona in enumerate(personas):
        alone_state, alone = ModelBank([persona]).start(PROMPTS)
        torch.testing.assert_close(alone[0], lp[r], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone_state.step(tokens)[0], lp_next[r], atol=1e-5, rtol=1e-5)


def test_lora_experts_batched_equal_one_by_one(tiny_models, tiny_adapters):
    from peft import PeftModel

    base = str(tiny_models[0])
    experts = [Expert(base, adapter=str(p)) for p in tiny_adapters]
    bank = ModelBank([Expert(base), *experts])
    assert len(bank.groups) == 1
    _, lp = bank.start(PROMPTS)
    tok = load_model(base).tokenizer
    for r, adapter in enumerate([None, *tiny_adapters]):
        model = AutoModelForCausalLM.from_pretrained(base)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        for b, prompt in enumerate(PROMPTS):
            ids = tok(format_prompt(tok, prompt, None, True), add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                expected = torch.log_softmax(model(**ids).logits[0, -1], -1)
            torch.testing.assert_close(lp[r, b], expected, atol=1e-4, rtol=1e-4)
    # the adapters really change the output, so the test above can fail
    assert not torch.allclose(lp[0], lp[1], atol=1e-3)


def test_padded_logit_slots_are_masked(tiny_models, tiny_padded_model, tiny_tokenizer):
    bank = ModelBank([Expert(str(tiny_padded_model)), Expert(str(tiny_models[1]))])
    assert bank.vocab_size == len(tiny_tokenizer)
    _, lp = bank.start(PROMPTS)
    assert lp.shape[-1] == len(tiny_tokenizer)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 2))


def test_tokenizer_mismatch_is_a_clear_error(tiny_dir, tiny_models):
    from tests.tiny import CORPUS, build_tokenizer, save_model

    other = build_tokenizer(vocab_size=300)
    other_dir = tiny_dir / "other_vocab"
    import tests.tiny as tiny

    original = list(CORPUS)
    tiny.CORPUS[:] = ["completely different training text zzz qqq xxx"] * 3
    try:
        other = build_tokenizer(vocab_size=300)
    finally:
        tiny.CORPUS[:] = original
    save_model(other_dir, other, seed=3)
    with pytest.raises(Exception, match=r"tokenizers of .* differ at id \d+"):
        MOD([Expert(str(tiny_models[1])), Expert(str(other_dir))], reference=Expert(str(tiny_models[0])))


def test_sampling_is_seeded_and_reproducible(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    cfg = GenerationConfig(max_new_tokens=10, strategy="sample", seed=3, temperature=1.5)
    first = [g.token_ids for g in mod.generate(PROMPTS, [0.5, 0.5], config=cfg)]
    again = [g.token_ids for g in mod.generate(PROMPTS, [0.5, 0.5], config=cfg)]
    other = [g.token_ids for g in mod.generate(PROMPTS, [0.5, 0.5], config=cfg.model_copy(update={"seed": 4}))]
    assert first == again
    assert first != other


def test_top_k_one_sampling_is_greedy(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    greedy = mod.generate(PROMPTS, [0.4, 0.6], config=GREEDY)
    sampled = mod.generate(PROMPTS, [0.4, 0.6], config=GenerationConfig(max_new_tokens=8, strategy="sample", top_k=1))
    assert [g.token_ids for g in greedy] == [g.token_ids for g in sampled]


def test_beam_search_scores_at_least_greedy(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    greedy = mod.generate(PROMPTS, [0.4, 0.6], config=GREEDY)
    one_beam = mod.generate(PROMPTS, [0.4, 0.6], config=GenerationConfig(max_new_tokens=8, strategy="beam",
                                                                          num_beams=1))
    beams = mod.generate(PROMPTS, [0.4, 0.6], config=GenerationConfig(max_new_tokens=8, strategy="beam",
                                                                       num_beams=4))
    assert [g.token_ids for g in one_beam] == [g.token_ids for g in greedy]
    for g, bm in zip(greedy, beams, strict=True):
        if len(g.token_ids) == len(bm.token_ids):
            assert sum(bm.logprobs) >= sum(g.logprobs) - 1e-6
        else:  # length-normalised score
            assert sum(bm.logprobs) / len(bm.logprobs) >= sum(g.logprobs) / len(g.logprobs) - 1e-6


def test_weights_per_prompt_match_separate_calls(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    batched = mod.generate(PROMPTS, [[1.0, 0.0], [0.2, 0.8]], config=GREEDY)
    assert batched[0].token_ids == mod.generate(PROMPTS[0], [1.0, 0.0], config=GREEDY)[0].token_ids
    assert batched[1].token_ids == mod.generate(PROMPTS[1], [0.2, 0.8], config=GREEDY)[0].token_ids
    assert batched[1].weights == [0.2, 0.8]


def test_stop_strings_and_streaming(tiny_models, tiny_tokenizer):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    full = mod.generate(PROMPTS, [0.5, 0.5], config=GenerationConfig(max_new_tokens=12))
    events = list(mod.stream(PROMPTS, [0.5, 0.5], config=GenerationConfig(max_new_tokens=12)))
    for i, gen in enumerate(full):
        assert "".join(e.text for e in events if e.index == i) == gen.text
        assert [e.token_id for e in events if e.index == i] == gen.token_ids
    text = full[0].text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip()
    stop_config = GenerationConfig(max_new_tokens=12, stop=[stop])
    stopped = mod.generate(PROMPTS[0], [0.5, 0.5], config=stop_config)[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.find(stop)]
    streamed = "".join(e.text for e in mod.stream(PROMPTS[0], [0.5, 0.5], config=stop_config))
    assert streamed == stopped.text


def test_streamed_text_never_shows_a_stop_string_prefix():
    from polyalign.decode import _streamable

    assert _streamable("hello wor", ["world"], 0) == len("hello ")
    assert _streamable("hello", ["xyz"], 0) == 5


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "expected 2 weights"),
        ([1.0, float("nan")], "finite"),
        ([0.0, 0.0], "all weights are zero"),
        ([[1.0, 0.0]] * 3, "3 weight vectors for 2 prompts"),
    ],
)
def test_bad_weights_are_clear_errors(tiny_models, weights, message):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    with pytest.raises(WeightsError, match=message):
        mod.generate(PROMPTS, weights, config=GREEDY)


def test_missing_reference_where_it_does_not_cancel(tiny_models):
    _, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)])
    with pytest.raises(WeightsError, match="needs reverse KL and weights summing to 1"):
        mod.generate(PROMPTS, [0.5, 0.7], config=GREEDY)


def test_bad_inputs(tiny_models, tmp_path):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        mod.generate(["hi", "  "], [0.5, 0.5])
    with pytest.raises(ConfigError, match="no alpha"):
        mod.generate(["hi"], [0.5, 0.5], alpha=0.1)
    with pytest.raises(ModelLoadError, match="not found"):
        MOD([Expert(str(tmp_path / "nope"))])
    with pytest.raises(ModelLoadError, match="LoRA adapter not found"):
        MOD([Expert(a, adapter=str(tmp_path / "no_adapter"))])
    with pytest.raises(ConfigError, match="unique"):
        MOD([Expert(a), Expert(b)], objectives=["x", "x"])


def test_min_new_tokens_forbids_early_eos(tiny_models):
    ref, a, b = (str(p) for p in tiny_models)
    mod = MOD([Expert(a), Expert(b)], reference=Expert(ref))
    gens = mod.generate(PROMPTS, [0.5, 0.5], config=GenerationConfig(max_new_tokens=6, min_new_tokens=6))
    for g in gens:
        assert len(g.token_ids) == 6 and 2 not in g.token_ids
