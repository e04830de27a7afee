"""The CLP paper's Section 6.2 counterexample (polyalign.counterexample): soup fails, CLP and exact MOD do not."""

from __future__ import annotations

import copy

import pytest
import torch

from polyalign import counterexample as cx

pytestmark = pytest.mark.usefixtures("one_thread")

HALF = torch.tensor([0.5, 0.5], dtype=torch.float64)


@pytest.fixture(scope="module")
def result(one_thread) -> cx.Result:
    return cx.run(seed=0)


def test_experts_reach_their_closed_form_optima(result):
    assert (result.experts.exp() - result.expert_optima.exp()).abs().max() < 1e-3


def test_soup_puts_little_mass_on_the_third_output(result):
    optimum = result.distributions["optimum"]
    assert optimum[2] > 0.99  # what the weighted reward asks for at alpha = 0.03
    assert result.distributions["soup"][2] < 0.1
    assert result.values["soup"] < result.values["optimum"] - 0.1


def test_clp_puts_most_of_its_mass_on_the_third_output(result):
    assert result.distributions["clp"][2] > 0.9
    assert (result.distributions["clp"] - result.distributions["optimum"]).abs().max() < 0.01


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.2, 0.8), (1.0, 0.0)])
@pytest.mark.parametrize("alpha", [0.03, 0.1])
def test_mod_of_the_closed_form_experts_is_the_weighted_optimum(weights, alpha):
    reference = torch.log_softmax(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64), -1)
    experts = torch.stack([cx.optimal_logprobs(reference, e, alpha) for e in torch.eye(2, dtype=torch.float64)])
    w = torch.tensor(weights, dtype=torch.float64)
    torch.testing.assert_close(cx.mod_logprobs(reference, experts, w), cx.optimal_logprobs(reference, w, alpha),
                               rtol=0, atol=1e-12)


def test_soup_is_exact_when_only_the_logit_layer_differs():
    """The maths behind the counterexample: logits are linear in lm_head, so a soup of experts that differ only
    there is their logit average, i.e. MOD (reverse KL). The soup's failure comes from averaging the body."""
    base = cx.build_model(1)
    experts = [copy.deepcopy(base) for _ in range(2)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for e in experts:
            e.lm_head.weight.add_(3 * torch.randn(e.lm_head.weight.shape, generator=generator, dtype=torch.float64))
        logprobs = torch.stack([cx.policy_logprobs(e) for e in experts])
        soup = cx.clp_logprobs(cx.soup(base, experts), HALF[None])[0]
        torch.testing.assert_close(soup, cx.mod_logprobs(cx.policy_logprobs(base), logprobs, HALF))


def test_soup_at_a_vertex_is_that_expert():
    base = cx.build_model(2)
    experts = [cx.train_expert(base, i, steps=5) for i in range(2)]
    with torch.no_grad():
        soup = cx.clp_logprobs(cx.soup(base, experts), torch.eye(2, dtype=torch.float64))
        torch.testing.assert_close(soup, torch.stack([cx.policy_logprobs(e) for e in experts]))


def test_value_is_maximised_by_the_closed_form():
    reference = torch.log_softmax(torch.tensor([0.0, 0.4, -0.3], dtype=torch.float64), -1)
    best = cx.optimal_logprobs(reference, HALF, 0.1)
    others = torch.log_softmax(best + 0.3 * torch.randn(64, 3, dtype=torch.float64), -1)
    assert bool((cx.value(others, reference, HALF.expand(64, 2), 0.1) <= cx.value(best, reference, HALF, 0.1)).all())
