"""CLP's conditioning against closed forms and brute force on tiny random Llamas (float64, so that the only
differences between exact routes are rounding)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn
from transformers import LlamaForCausalLM

from polyalign import conditioning as C
from polyalign.errors import ConfigError, PolyalignError, WeightsError
from tests.tiny import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 40
ALPHA_MIN = 0.1
OBJECTIVES = ["helpful", "concise", "kind"]
SELECTORS = ["full", "attn", "logit", "layers:1-1", "attn:0-0", r"regex:mlp\.(up|down)_proj|norm"]
W_ROWS = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.6, 0.0, 0.4]], dtype=torch.float64)
ALPHA_ROWS = torch.tensor([0.3, 0.1, 0.85], dtype=torch.float64)
EXACT = {"rtol": 0.0, "atol": 0.0}


def _ids(rows: int = 3, length: int = 6) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(5))


def _base(seed: int = 0) -> LlamaForCausalLM:
    return build_model(VOCAB, seed).double()


def _plain(state: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    """A fresh model carrying the given state (the brute-force side of every comparison)."""
    model = _base(seed=99)
    model.load_state_dict(state)
    return model


def _perturb(params, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _conditioned(selector: str, f_mix: str = "softmdp") -> tuple[C.ConditionedModel, dict[str, torch.Tensor]]:
    """A ConditionedModel whose copies differ from each other and from the reference; and the reference state."""
    base = _base()
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    cm = C.ConditionedModel(base, selector, OBJECTIVES, f_mix, alpha_min=ALPHA_MIN)
    for i, copy in enumerate(cm.copies):
        _perturb(copy, seed=100 + i)
    return cm, reference


def _mixed_state(cm: C.ConditionedModel, weights, alpha) -> dict[str, torch.Tensor]:
    """The full state of a plain model carrying theta_S(alpha, w), mixed by hand from Eq. 3."""
    copy_c, ref_c = C.mix_coefficients(weights, alpha, cm.f_mix, cm.alpha_min)
    state = {k: v.clone() for k, v in cm.model.state_dict().items()}
    for k, name in enumerate(cm.names):
        state[name] = ref_c * cm.reference(k) + sum(copy_c[i] * cm.copies[i][k] for i in range(len(OBJECTIVES)))
    return {k: v.detach() for k, v in state.items()}


def _logits(model, ids, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


# --- f_mix (Eq. 4) and its inverse (Appendix A.4) -------------------------------------------------------------


def test_f_mix_at_known_points():
    assert float(C.f_mix(ALPHA_MIN, "softmdp", ALPHA_MIN)) == 0.0
    assert float(C.f_mix(1.0, "softmdp", ALPHA_MIN)) == 1.0
    assert float(C.f_mix(0.5, "softmdp", 0.1)) == pytest.approx(0.4 / (0.5 * 0.9))
    assert float(C.f_mix(0.25, "softmdp", 0.2)) == pytest.approx(0.05 / (0.25 * 0.8))
    assert float(C.f_mix(0.37, "linear", 0.1)) == 0.37
    assert float(C.f_mix_inverse(0.0, "softmdp", 0.1)) == pytest.approx(0.1)
    assert float(C.f_mix_inverse(1.0, "softmdp", 0.1)) == 1.0


@settings(max_examples=60, deadline=None)
@given(alpha_min=st.floats(1e-3, 0.95), u=st.floats(0.0, 1.0))
@example(alpha_min=0.40862852580230274, u=1.0)  # once gave beta = 1 + 1 ulp
def test_f_mix_inverse_round_trip(alpha_min, u):
    alpha = C.f_mix_inverse(u, "softmdp", alpha_min)
    assert alpha_min <= float(alpha) <= 1.0
    assert float(C.f_mix(alpha, "softmdp", alpha_min)) == pytest.approx(u, abs=1e-9)
    assert float(C.f_mix_inverse(C.f_mix(alpha, "softmdp", alpha_min), "softmdp", alpha_min)) == pytest.approx(
        float(alpha), rel=1e-9)


@pytest.mark.parametrize("kind", C.F_MIX)
def test_f_mix_is_increasing_from_its_floor_to_one(kind):
    alphas = torch.linspace(ALPHA_MIN, 1.0, 201, dtype=torch.float64)
    beta = C.f_mix(alphas, kind, ALPHA_MIN)
    assert bool((beta.diff() > 0).all())
    assert float(beta[-1]) == 1.0 and float(beta[0]) == (0.0 if kind == "softmdp" else ALPHA_MIN)


@pytest.mark.parametrize("alpha", [0.05, 1.01, float("nan"), -1.0])
def test_alpha_outside_its_range_is_refused(alpha):
    with pytest.raises(WeightsError, match=r"alpha .*\[0\.1, 1\]"):
        C.f_mix(alpha, "softmdp", ALPHA_MIN)
    with pytest.raises(WeightsError, match="alpha"):
        C.mix_coefficients([0.5, 0.5], alpha, "softmdp", ALPHA_MIN)


@pytest.mark.parametrize("alpha_min", [0.0, 1.0, -0.2, float("nan"), "0.1", True])
def test_bad_alpha_min_is_refused(alpha_min):
    with pytest.raises(ConfigError, match="alpha_min must be a number in \\(0, 1\\)"):
        C.f_mix(0.5, "softmdp", alpha_min)


def test_unknown_f_mix_is_refused():
    with pytest.raises(ConfigError, match="unknown f_mix 'cosine'"):
        C.mix_coefficients([1.0], 0.5, "cosine", ALPHA_MIN)


# --- Eq. 3's coefficients ----------------------------------------------------------------------------------------


def test_mix_coefficients_closed_form():
    copy, ref = C.mix_coefficients([0.25, 0.75], 0.5, "softmdp", 0.1)
    beta = 0.4 / 0.45
    torch.testing.assert_close(copy, torch.tensor([0.25, 0.75], dtype=torch.float64) * (1 - beta))
    assert float(ref) == pytest.approx(beta)
    copy, ref = C.mix_coefficients([0.25, 0.75], None, "softmdp", 0.1)  # alpha omitted: alpha_min, beta = 0
    assert copy.tolist() == [0.25, 0.75] and float(ref) == 0.0
    copy, ref = C.mix_coefficients(W_ROWS, ALPHA_ROWS, "linear", 0.1)
    assert copy.shape == (3, 3) and ref.shape == (3,)
    torch.testing.assert_close(ref, ALPHA_ROWS)
    torch.testing.assert_close(copy.sum(-1) + ref, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize(("weights", "message"), [
    ([0.7, 0.7], "not on the simplex"),
    ([1.5, -0.5], "not on the simplex"),
    ([0.0, 0.0], "all weights are zero"),
    ([[0.5, 0.5], [0.9, 0.9]], "not on the simplex"),
    ([0.2, 0.3, 0.5], "expected 2 weights"),
])
def test_weights_off_the_simplex_are_refused(weights, message):
    with pytest.raises(WeightsError, match=message):
        C.mix_coefficients(weights, None, "softmdp", ALPHA_MIN, objectives=["a", "b"])


def test_alpha_per_row_must_match_the_rows():
    with pytest.raises(WeightsError, match="one per row"):
        C.mix_coefficients(W_ROWS, torch.tensor([0.5, 0.5]), "softmdp", ALPHA_MIN)


# --- samplers of Algorithm 1 ------------------------------------------------------------------------------------


def test_dirichlet_moments_and_marginal_law():
    c = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([C.sample_weights(3, g, c.tolist()) for _ in range(3000)])
    assert bool((draws >= 0).all()) and torch.allclose(draws.sum(-1), torch.ones(3000, dtype=torch.float64))
    c0 = c.sum()
    torch.testing.assert_close(draws.mean(0), c / c0, atol=0.01, rtol=0)
    torch.testing.assert_close(draws.var(0), c * (c0 - c) / (c0**2 * (c0 + 1)), atol=0.005, rtol=0)
    for i in range(3):  # each marginal is Beta(c_i, c0 - c_i)
        assert stats.kstest(draws[:, i].numpy(), stats.beta(float(c[i]), float(c0 - c[i])).cdf).pvalue > 1e-3


def test_dirichlet_draws_come_from_the_generator_alone():
    a = C.sample_weights(4, torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG plays no part
    b = C.sample_weights(4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float(C.sample_weights(1, torch.Generator().manual_seed(0))[0]) == 1.0


@pytest.mark.parametrize(("m", "concentration"), [(0, 1.0), (2, 0.0), (2, [1.0, 2.0, 3.0]), (2, float("inf"))])
def test_bad_dirichlet_arguments_are_refused(m, concentration):
    with pytest.raises(ConfigError):
        C.sample_weights(m, torch.Generator(), concentration)


@pytest.mark.parametrize("kind", C.F_MIX)
def test_inverse_cdf_makes_beta_uniform(kind):
    g = torch.Generator().manual_seed(1)
    alphas = torch.tensor([C.sample_alpha(g, kind, ALPHA_MIN) for _ in range(2000)], dtype=torch.float64)
    assert bool(((alphas >= ALPHA_MIN) & (alphas <= 1)).all())
    beta = C.f_mix(alphas, kind, ALPHA_MIN).numpy()
    low = 0.0 if kind == "softmdp" else ALPHA_MIN
    assert stats.kstest(beta, stats.uniform(low, 1 - low).cdf).pvalue > 1e-3
    if kind == "softmdp":  # the rule matters: alpha itself is far from uniform
        assert stats.kstest(alphas.numpy(), stats.uniform(ALPHA_MIN, 1 - ALPHA_MIN).cdf).pvalue < 1e-3


# --- selectors ---------------------------------------------------------------------------------------------------


def test_selectors_pick_the_documented_parameters():
    model = _base()
    attn = C.select_parameters(model, "attn")
    assert len(attn) == 8 and all(".self_attn." in n and n.endswith("_proj.weight") for n in attn)
    assert C.select_parameters(model, "logit") == ["lm_head.weight"]
    assert C.select_parameters(model, "attn:0-0") == [n for n in attn if ".layers.0." in n]
    layer1 = C.select_parameters(model, "layers:1")
    assert len(layer1) == 9 and all(".layers.1." in n for n in layer1)
    full = C.select_parameters(model, "full")
    assert C.select_parameters(model, "layers:0-1") == [n for n in full if ".layers." in n]
    assert len(C.select_parameters(model, "full")) == len(list(model.parameters()))
    assert C.select_parameters(model, "regex:norm") == [n for n, _ in model.named_parameters() if "norm" in n]
    assert C.select_parameters(model, "lora") == attn
    assert C.select_parameters(model, "lora:regex:mlp|norm") == [
        n for n, _ in model.named_parameters() if ".mlp." in n]  # Linear weights only: the norms carry no adapter


@pytest.mark.parametrize(("selector", "message"), [
    ("regex:nothing_here", r"'regex:nothing_here' matches no parameter .* named like model\.embed_tokens\.weight"),
    ("regex:(", "invalid regular expression"),
    ("bogus", "unknown selector 'bogus': use full | attn"),
    ("attn:3-1", "ends \\(1\\) before it starts \\(3\\)"),
    ("attn:zero-11", "must read A-B or N"),
    ("layers:0-11", "numbered 0-1, so the range cannot end at 11"),
    ("", "non-empty string"),
    ("full:0-1", "unknown selector"),
])
def test_bad_selectors_are_clear_errors(selector, message):
    with pytest.raises(ConfigError, match=message):
        C.select_parameters(_base(), selector)


def test_a_parameter_that_cannot_be_mixed_per_row_is_named():
    class Squared(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.gain**2

    net = nn.Sequential(nn.Linear(4, 4), Squared())
    with pytest.raises(ConfigError, match=r"cannot condition 1\.gain per row: its module 1 \(Squared\)"):
        C.ConditionedModel(net, "full", ["a", "b"], alpha_min=ALPHA_MIN)
    cm = C.ConditionedModel(net, "full", ["a", "b"], alpha_min=ALPHA_MIN, per_row=False)  # one weighting still works
    assert cm(torch.ones(2, 4), weights=[0.5, 0.5]).shape == (2, 4)


def test_every_refusal_is_a_polyalign_error():
    for call in (lambda: C.select_parameters(_base(), "regex:zzz"), lambda: C.f_mix(0.0, "softmdp", ALPHA_MIN),
                 lambda: C.mix_coefficients([2.0, -1.0], None, "softmdp", ALPHA_MIN)):
        with pytest.raises(PolyalignError):
            call()


def test_bad_objectives_and_copy_index_are_refused():
    with pytest.raises(ConfigError, match="objectives must be distinct"):
        C.ConditionedModel(_base(), "attn", ["a", "a"], alpha_min=ALPHA_MIN)
    cm, _ = _conditioned("logit")
    with pytest.raises(ConfigError, match="copy index"):
        cm.export_copy(3)
    with pytest.raises(WeightsError, match="expected 3 weights, one per objective"):
        cm(input_ids=_ids(), weights=[0.5, 0.5])


# --- parameter-copy CLP: every selector ---------------------------------------------------------------------------


@pytest.mark.parametrize("selector", SELECTORS)
def test_one_hot_weights_at_alpha_min_give_the_copy(selector):
    cm, _ = _conditioned(selector)
    ids = _ids()
    for i in range(len(OBJECTIVES)):
        expected = _logits(_plain(cm.export_copy(i)), ids)
        e_i = [float(j == i) for j in range(len(OBJECTIVES))]
        torch.testing.assert_close(_logits(cm, ids, weights=e_i), expected, **EXACT)
        torch.testing.assert_close(_logits(cm, ids, weights=[e_i] * 3, alpha=ALPHA_MIN), expected, **EXACT)


@pytest.mark.parametrize("selector", SELECTORS)
@pytest.mark.parametrize("f_mix", C.F_MIX)
def test_beta_one_gives_the_reference(selector, f_mix):
    cm, reference = _conditioned(selector, f_mix)
    ids = _ids()
    expected = _logits(_plain(reference), ids)
    torch.testing.assert_close(_logits(cm, ids, weights=[0.2, 0.3, 0.5], alpha=1.0), expected, **EXACT)
    torch.testing.assert_close(_logits(cm, ids, weights=W_ROWS, alpha=1.0), expected, **EXACT)
    assert not torch.allclose(_logits(cm, ids, weights=[0.2, 0.3, 0.5], alpha=0.5), expected)  # copies do differ


@pytest.mark.parametrize("selector", SELECTORS)
def test_mixed_parameters_and_mixed_outputs_agree_with_brute_force(selector):
    cm, _ = _conditioned(selector)
    ids = _ids()
    per_row = _logits(cm, ids, weights=W_ROWS, alpha=ALPHA_ROWS)
    for r in range(3):
        w, a = W_ROWS[r].tolist(), float(ALPHA_ROWS[r])
        brute = _logits(_plain(_mixed_state(cm, w, a)), ids[r:r + 1])
        one = _logits(cm, ids[r:r + 1], weights=w, alpha=a)  # mixed parameters, the whole (1-row) batch
        torch.testing.assert_close(one, brute)
        torch.testing.assert_close(per_row[r:r + 1], one)
    # one weighting for the batch: both routes agree on the same batch
    w = [0.3, 0.3, 0.4]
    torch.testing.assert_close(_logits(cm, ids, weights=[w] * 3, alpha=0.4), _logits(cm, ids, weights=w, alpha=0.4))


@pytest.mark.parametrize("selector", ["full", "attn:0-0"])
def test_gradient_reaching_each_copy_is_its_coefficient_times_gamma(selector):
    """Appendix A.3: g_i = (1 - f_mix(alpha)) w_i gamma, gamma the gradient at the mixed parameters."""
    cm, _ = _conditioned(selector)
    ids, w, alpha = _ids(), [0.2, 0.5, 0.3], 0.35
    target = torch.randn(3, 6, VOCAB, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    (cm(input_ids=ids, weights=w, alpha=alpha).logits * target).sum().backward()

    plain = _plain(_mixed_state(cm, w, alpha))
    (plain(input_ids=ids).logits * target).sum().backward()
    copy_c, _ = cm.coefficients(w, alpha)
    plain_grads = dict(plain.named_parameters())
    for k, name in enumerate(cm.names):
        gamma = plain_grads[name].grad
        assert gamma.abs().max() > 0
        for i in range(len(OBJECTIVES)):
            torch.testing.assert_close(cm.copies[i][k].grad, float(copy_c[i]) * gamma)
    for name, p in cm.model.named_parameters():  # shared parameters: the plain model's gradient, untouched
        if name not in cm.names:
            torch.testing.assert_close(p.grad, plain_grads[name].grad)
        else:
            assert p.grad is None and not p.requires_grad

    # the per-row route gives the same gradients for the same weighting, up to float32 rounding: LlamaRMSNorm
    # and the attention softmax compute in float32 even in a float64 model, and this route runs them m + 1 times
    grads = [p.grad.clone() for copy in cm.copies for p in copy]
    cm.zero_grad()
    (cm.forward_mixed_outputs(input_ids=ids, weights=[w] * 3, alpha=alpha).logits * target).sum().backward()
    for g, p in zip(grads, [p for copy in cm.copies for p in copy], strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-5)


def test_mixed_parameters_are_cached_per_weighting_and_refreshed_after_an_update():
    cm, _ = _conditioned("attn")
    with torch.no_grad():
        first = cm.mixed_parameters([0.2, 0.3, 0.5], 0.4)
        assert cm.mixed_parameters([0.2, 0.3, 0.5], 0.4) is first
        assert cm.mixed_parameters([0.5, 0.3, 0.2], 0.4) is not first
        cm.copies[0][0].add_(1.0)  # an optimizer step updates in place
        fresh = cm.mixed_parameters([0.2, 0.3, 0.5], 0.4)
    assert fresh is not first
    torch.testing.assert_close(fresh[cm.names[0]] - first[cm.names[0]],
                               torch.full_like(fresh[cm.names[0]], float(cm.coefficients([0.2, 0.3, 0.5], 0.4)[0][0])))
    assert cm.mixed_parameters([0.2, 0.3, 0.5], 0.4)[cm.names[0]].requires_grad  # never cached with grad on


def test_conditioning_a_tied_output_layer_unties_it():
    config = _base().config
    config.tie_word_embeddings = True
    tied = LlamaForCausalLM(config).double().eval()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    cm = C.ConditionedModel(tied, "logit", OBJECTIVES, alpha_min=ALPHA_MIN)
    assert cm.names == ["lm_head.weight"]
    _perturb([cm.copies[0][0]], seed=4)
    ids = _ids()
    untied = _base(seed=99)
    state = {k: v.clone() for k, v in tied.state_dict().items()}
    state["lm_head.weight"] = cm.copies[0][0].detach().clone()  # the input embedding keeps the reference
    untied.load_state_dict(state)
    expected = _logits(untied, ids)
    torch.testing.assert_close(_logits(cm, ids, weights=[1.0, 0.0, 0.0]), expected, **EXACT)
    torch.testing.assert_close(_logits(cm, ids, weights=[[1.0, 0.0, 0.0]] * 3), expected, **EXACT)


# --- LoRA CLP ----------------------------------------------------------------------------------------------------


def _lora(targets: str = "attn") -> C.LoRAConditionedModel:
    lm = C.LoRAConditionedModel(_base(), OBJECTIVES, targets, alpha_min=ALPHA_MIN, rank=2, lora_alpha=3.0,
                                generator=torch.Generator().manual_seed(0))
    for i in range(len(OBJECTIVES)):
        _perturb(lm.lora_A[i], seed=200 + i, scale=0.5)
        _perturb(lm.lora_B[i], seed=300 + i, scale=0.5)
    return lm


def _merged_by_hand(lm: C.LoRAConditionedModel, copy_c, combine: str = "deltas") -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    for k, name in enumerate(lm.names):
        a = [lm.lora_A[i][k].detach() for i in range(len(OBJECTIVES))]
        b = [lm.lora_B[i][k].detach() for i in range(len(OBJECTIVES))]
        if combine == "deltas":  # W + sum_i c_i s B_i A_i
            state[name] = state[name] + sum(float(c) * lm.scaling * bi @ ai for c, ai, bi in zip(copy_c, a, b,
                                                                                              strict=True))
        else:  # averaging A and B separately: cross terms
            a_bar = sum(float(c) * ai for c, ai in zip(copy_c, a, strict=True))
            b_bar = sum(float(c) * bi for c, bi in zip(copy_c, b, strict=True))
            state[name] = state[name] + lm.scaling * b_bar @ a_bar
    return state


def test_lora_starts_at_the_reference_and_freezes_the_base():
    lm = C.LoRAConditionedModel(_base(), OBJECTIVES, alpha_min=ALPHA_MIN, rank=2)
    ids = _ids()
    torch.testing.assert_close(_logits(lm, ids, weights=[0.2, 0.3, 0.5]), _logits(_base(), ids), **EXACT)
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert all(torch.equal(lm.lora_A[0][k], lm.lora_A[2][k]) for k in range(len(lm.names)))


def test_lora_mixing_equals_the_merged_deltas_not_averaged_factors():
    lm, ids = _lora(), _ids()
    w, alpha = [0.2, 0.5, 0.3], 0.3
    copy_c, _ = lm.coefficients(w, alpha)
    got = _logits(lm, ids, weights=w, alpha=alpha)
    torch.testing.assert_close(got, _logits(_plain(_merged_by_hand(lm, copy_c)), ids))
    averaged = _logits(_plain(_merged_by_hand(lm, copy_c, combine="factors")), ids)
    assert (got - averaged).abs().max() > 1e-2
    with torch.no_grad():  # the helpers agree with the hand-merged weights
        merged = lm.merged_parameters(w, alpha)
        hand = _merged_by_hand(lm, copy_c)
        for k, name in enumerate(lm.names):
            torch.testing.assert_close(merged[name], hand[name])
            b, a = lm.lora_B[1][k], lm.lora_A[1][k]
            torch.testing.assert_close(lm.lora_delta(1, name), lm.scaling * b @ a)


def test_lora_per_row_batch_equals_one_by_one_and_the_exports():
    lm, ids = _lora("lora:full"), _ids()
    assert "lm_head.weight" in lm.names and not any("norm" in n for n in lm.names)
    per_row = _logits(lm, ids, weights=W_ROWS, alpha=ALPHA_ROWS)
    for r in range(3):
        w, a = W_ROWS[r].tolist(), float(ALPHA_ROWS[r])
        copy_c, _ = lm.coefficients(w, a)
        torch.testing.assert_close(per_row[r:r + 1], _logits(_plain(_merged_by_hand(lm, copy_c)), ids[r:r + 1]))
    for i in range(len(OBJECTIVES)):
        e_i = [float(j == i) for j in range(len(OBJECTIVES))]
        torch.testing.assert_close(_logits(lm, ids, weights=e_i), _logits(_plain(lm.export_copy(i)), ids))
    torch.testing.assert_close(_logits(lm, ids, weights=W_ROWS, alpha=1.0), _logits(_base(), ids), **EXACT)


def test_lora_scaling_matches_peft():
    from peft import LoraConfig, get_peft_model

    lm, ids = _lora(), _ids()
    peft_model = get_peft_model(_base(), LoraConfig(r=2, lora_alpha=3.0, target_modules=["q_proj", "k_proj",
                                                                                         "v_proj", "o_proj"]))
    with torch.no_grad():
        for k, name in enumerate(lm.names):
            module = peft_model.base_model.model.get_submodule(name.rpartition(".")[0])
            module.lora_A["default"].weight.copy_(lm.lora_A[1][k])
            module.lora_B["default"].weight.copy_(lm.lora_B[1][k])
    torch.testing.assert_close(_logits(lm, ids, weights=[0.0, 1.0, 0.0]), _logits(peft_model.eval(), ids))


def test_lora_errors_are_clear():
    with pytest.raises(ConfigError, match="matches no parameter"):
        C.LoRAConditionedModel(_base(), OBJECTIVES, "regex:norm", alpha_min=ALPHA_MIN)
    with pytest.raises(ConfigError, match="rank must be a positive integer"):
        C.LoRAConditionedModel(_base(), OBJECTIVES, alpha_min=ALPHA_MIN, rank=0)
    with pytest.raises(ConfigError, match="use LoRAConditionedModel"):
        C.ConditionedModel(_base(), "lora", OBJECTIVES, alpha_min=ALPHA_MIN)
    assert isinstance(C.condition(_base(), "lora:attn:1", OBJECTIVES, alpha_min=ALPHA_MIN, rank=2),
                      C.LoRAConditionedModel)
    assert isinstance(C.condition(_base(), "logit", OBJECTIVES, alpha_min=ALPHA_MIN), C.ConditionedModel)
