"""f-DPO maths: the loss of each divergence against hand-computed values and TRL's, reverse KL = DPO, log space
for long sequences, and on a one-step bandit (Bradley-Terry preferences from a known reward) the learned policy
against the f-optimal one ``pi_ref (grad f)^-1(R/beta - Z)``, and MOD of two learned experts against the optimum
for the weighted reward and ``combine_logprobs``' exact answer."""

from __future__ import annotations

import math

import pytest
import torch

from polyalign import combine_logprobs, divergences
from polyalign.errors import DivergenceError
from polyalign.training.fdpo import dpo_loss, expert_divergence, fdpo_loss, implicit_reward, preference_logits

DIVERGENCES = ["reverse_kl", "forward_kl", "jsd", "alpha:0.3", "alpha:0.7", "jeffrey"]

# log pi(y_w), log pi(y_l), log pi_ref(y_w), log pi_ref(y_l): log ratios t_w = 1, t_l = -0.5
FIXED = (torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]))
BETA = 0.5


def _hand_grad_f(name: str, x: float) -> float:
    """grad f by the table of DESIGN.md, written out by hand."""
    if name == "reverse_kl":
        return math.log(x) + 1
    if name == "forward_kl":
        return -1 / x
    if name == "jsd":
        return math.log(2 * x / (1 + x))
    if name == "jeffrey":
        return math.log(x) + 1 - 1 / x
    a = float(name.split(":")[1])
    return (1 - x ** (-a)) / a


@pytest.mark.parametrize("name", DIVERGENCES)
def test_loss_matches_the_hand_computed_value(name):
    logit = BETA * (_hand_grad_f(name, math.e) - _hand_grad_f(name, math.exp(-0.5)))
    expected = math.log1p(math.exp(-logit))
    assert float(fdpo_loss(*FIXED, name, BETA)) == pytest.approx(expected, rel=1e-12)
    assert float(preference_logits(*FIXED, name, BETA)) == pytest.approx(logit, rel=1e-12)
    assert float(implicit_reward(FIXED[0], FIXED[2], name, BETA)) == pytest.approx(BETA * _hand_grad_f(name, math.e))


def test_reverse_kl_is_standard_dpo():
    g = torch.Generator().manual_seed(0)
    logps = [-50 * torch.rand(64, generator=g, dtype=torch.float64) for _ in range(4)]
    for beta in (0.01, 0.1, 1.0):
        torch.testing.assert_close(fdpo_loss(*logps, "reverse_kl", beta), dpo_loss(*logps, beta))
    # DPO by its own formula, once more by hand
    margin = (logps[0] - logps[2]) - (logps[1] - logps[3])
    torch.testing.assert_close(dpo_loss(*logps, 0.1), torch.log1p(torch.exp(-0.1 * margin)))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_long_sequences_stay_finite_in_log_space(name):
    """Sequence log-probs of thousands of nats: ratios e^t would overflow, the log-space loss does not."""
    chosen, rejected = torch.tensor([-4000.0], requires_grad=True), torch.tensor([-5000.0], requires_grad=True)
    loss = fdpo_loss(chosen, rejected, torch.tensor([-4000.5]), torch.tensor([-4999.0]), name, 0.1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert float(chosen.grad) < 0 < float(rejected.grad)  # raise the chosen, lower the rejected


def test_divergences_mod_cannot_use_are_refused_with_the_reason():
    for name in ("tv", "chi2"):
        with pytest.raises(DivergenceError, match="Theorem 3"):
            expert_divergence(name)
    with pytest.raises(DivergenceError, match="unknown divergence"):
        expert_divergence("hellinger")
    assert expert_divergence("js").name == "jsd"


# -- TRL's losses on the same log-probs ------------------------------------------------------------------------


def _trl_loss(logps: tuple[torch.Tensor, ...], name: str, beta: float) -> torch.Tensor:
    """TRL DPOTrainer's own loss code (``_compute_loss``) run on fixed sequence log-probs: a stand-in model returns
    them as one-token completions and the reference log-probs come precomputed."""
    from collections import defaultdict
    from types import SimpleNamespace

    from accelerate import Accelerator
    from trl import DPOTrainer

    chosen, rejected, ref_chosen, ref_rejected = logps
    n = chosen.shape[0]
    table = torch.cat([chosen, rejected])[:, None]

    class Stub(torch.nn.Module):
        def forward(self, **_):
            zeros = torch.zeros(2 * n, 1)
            return SimpleNamespace(log_probs=table, entropy=zeros, mean_logits=zeros,
                                   is_top1=torch.zeros(2 * n, 1, dtype=torch.bool))

    types = {"reverse_kl": "reverse_kl", "forward_kl": "forward_kl", "jsd": "js_divergence"}
    trainer = object.__new__(DPOTrainer)
    vars(trainer).update(
        model=Stub().train(), accelerator=Accelerator(cpu=True), _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1, use_weighting=False, aux_loss_enabled=False, loss_types=["sigmoid"],
        loss_weights=[1.0], beta=beta, ld_alpha=None, precompute_ref_logps=True, label_smoothing=0.0,
        f_divergence_type=types.get(name, "alpha_divergence"),
        # our alpha:A (grad f = (1 - x^-A)/A) is TRL's f_alpha_divergence_coef = 1 - A
        f_alpha_divergence_coef=1 - float(name.split(":")[1]) if name.startswith("alpha") else 0.5)
    inputs = {"input_ids": torch.zeros(2 * n, 2, dtype=torch.long), "attention_mask": torch.ones(2 * n, 2),
              "completion_mask": torch.tensor([[0, 1]] * (2 * n)), "ref_chosen_logps": ref_chosen,
              "ref_rejected_logps": ref_rejected}
    return trainer._compute_loss(trainer.model, inputs, return_outputs=False)


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "jsd", "alpha:0.3", "alpha:0.7"])
def test_trl_dpo_trainer_computes_the_same_loss(name):
    pytest.importorskip("trl")
    g = torch.Generator().manual_seed(1)
    logps = tuple(-20 * torch.rand(16, generator=g) for _ in range(4))
    ours = fdpo_loss(*logps, name, 0.2).mean()
    torch.testing.assert_close(_trl_loss(logps, name, 0.2).double(), ours, rtol=1e-5, atol=1e-6)


# -- the one-step bandit ------------------------------------------------------------------------------------------

K, BANDIT_BETA = 6, 1.0


def f_optimal(ref_logprobs: torch.Tensor, reward: torch.Tensor, name: str, beta: float) -> torch.Tensor:
    """``pi_ref (grad f)^-1(R/beta - Z)`` with Z found by bisection (mass decreases in Z): MOD paper, Eq. 2."""
    div = divergences.get(name)
    y = reward.double() / beta
    ref = ref_logprobs.double().exp()

    def mass(z: float) -> float:
        return float((ref * div.grad_inv(y - z)).sum())

    lo = float(y.max()) - div.grad_hi + 1e-12 if math.isfinite(div.grad_hi) else float(y.min()) - 60.0
    hi = float(y.max()) + 60.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mass(mid) > 1 else (lo, mid)
    pi = ref * div.grad_inv(y - (lo + hi) / 2)
    return (pi / pi.sum()).log()


def bradley_terry_pairs(reward: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs of distinct responses drawn uniformly, the winner drawn with P(i > j) = sigmoid(R_i - R_j)."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, K, (n,), generator=g)
    j = (i + torch.randint(1, K, (n,), generator=g)) % K
    first_wins = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(reward[i] - reward[j])
    return torch.where(first_wins, i, j), torch.where(first_wins, j, i)


def fit_bandit(ref_logprobs: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, name: str) -> torch.Tensor:
    """The tabular policy minimising the empirical f-DPO loss (L-BFGS from the reference)."""
    counts = torch.zeros(K, K, dtype=torch.float64)
    counts.index_put_((chosen, rejected), torch.ones_like(chosen, dtype=torch.float64), accumulate=True)
    won, lost = counts.nonzero(as_tuple=True)
    weight = counts[won, lost] / counts.sum()
    theta = ref_logprobs.double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, -1)
        losses = fdpo_loss(logp[won], logp[lost], ref_logprobs[won], ref_logprobs[lost], name, BANDIT_BETA)
        loss = (weight * losses).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), -1)


@pytest.fixture(scope="module")
def bandit():
    g = torch.Generator().manual_seed(3)
    ref = torch.log_softmax(torch.randn(K, generator=g, dtype=torch.float64), -1)
    rewards = 2 * torch.rand(2, K, generator=g, dtype=torch.float64)  # two objectives
    return ref, rewards


@pytest.mark.parametrize("name", DIVERGENCES)
def test_bandit_fdpo_recovers_the_f_optimal_policy_and_mod_the_weighted_optimum(bandit, name):
    ref, rewards = bandit
    experts = []
    for i in range(2):
        chosen, rejected = bradley_terry_pairs(rewards[i], 200_000, seed=10 + i)
        learned = fit_bandit(ref, chosen, rejected, name)
        optimum = f_optimal(ref, rewards[i], name, BANDIT_BETA)
        # 200k Bradley-Terry labels leave errors of about 0.002 (measured); the reference is 0.05-0.6 off
        assert (learned.exp() - optimum.exp()).abs().max() < 0.008
        assert (ref.exp() - optimum.exp()).abs().max() > 0.04
        experts.append(learned)
    for w in ([0.3, 0.7], [1.2, -0.2]):
        weights = torch.tensor(w, dtype=torch.float64)
        target = f_optimal(ref, weights @ rewards, name, BANDIT_BETA)
        exact_experts = torch.stack([f_optimal(ref, r, name, BANDIT_BETA) for r in rewards])
        exact = combine_logprobs(ref, exact_experts, weights, name)
        torch.testing.assert_close(exact, target, atol=1e-6, rtol=1e-6)  # MOD's guarantee with exact experts
        mod = combine_logprobs(ref, torch.stack(experts), weights, name)
        assert (mod.exp() - target.exp()).abs().max() < 0.01
