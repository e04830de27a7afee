"""f-DPO: direct preference optimisation under any barrier f-divergence (Wang et al. 2023, *Beyond reverse KL:
generalizing direct preference optimization with diverse divergence constraints*), the experts MOD combines.

The f-regularised optimum ``pi = pi_ref (grad f)^-1(R/beta - Z)`` (MOD paper, Shi et al. 2024, Eq. 2; f-DPO
Theorem 1) inverts to the implicit reward ``R = beta grad f(pi/pi_ref) + const``. Put into Bradley-Terry, the
constant cancels and the loss is (f-DPO, Eq. 12)::

    L = -log sigmoid( beta grad f(pi(y_w)/pi_ref(y_w)) - beta grad f(pi(y_l)/pi_ref(y_l)) )

on sequence probabilities. Sequence ratios under- and overflow any float, so everything is written in the log
ratio ``t = log pi(y) - log pi_ref(y)``: ``grad f(e^t) = E - grad_gap(t)`` with the divergence's own gap form
(:mod:`polyalign.divergences`), and the difference of two rewards is ``grad_gap(t_l) - grad_gap(t_w)``, which never
forms ``E`` (a large constant that would cancel badly for the alpha-divergence). Reverse KL (``grad f = log x + 1``)
gives standard DPO (Rafailov et al. 2023, Eq. 7).

Only barrier divergences train experts here: an expert is made for MOD, which refuses the others (MOD paper,
Theorem 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from polyalign import divergences
from polyalign.divergences import Divergence

LOG_RATIO_BOUND = 700.0
"""|log pi/pi_ref| is clamped here (nats) so that ``e^-t`` in the gap forms stays a finite float64."""


def expert_divergence(name: str | Divergence) -> Divergence:
    """The divergence an f-DPO expert trains under: a barrier f, or a :class:`DivergenceError` with the reason."""
    return divergences.require_barrier(divergences.get(name))


def implicit_reward(policy_logps: Tensor, reference_logps: Tensor, divergence: str | Divergence,
                    beta: float) -> Tensor:
    """``beta * grad f(pi(y)/pi_ref(y))`` of sequences from their log-probs (f-DPO, Eq. 11), in log space."""
    div = divergences.get(divergence)
    return beta * (div.edge - div.grad_gap(_log_ratio(policy_logps, reference_logps)))


def preference_logits(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
                      ref_rejected_logps: Tensor, divergence: str | Divergence, beta: float) -> Tensor:
    """``beta (grad f(pi/pi_ref)(y_w) - grad f(pi/pi_ref)(y_l))``: the Bradley-Terry logit of f-DPO (Eq. 12),
    computed as ``beta (grad_gap(t_l) - grad_gap(t_w))`` so that no large constant cancels."""
    div = divergences.get(divergence)
    t_chosen = _log_ratio(chosen_logps, ref_chosen_logps)
    t_rejected = _log_ratio(rejected_logps, ref_rejected_logps)
    return beta * (div.grad_gap(t_rejected) - div.grad_gap(t_chosen))


def fdpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
              divergence: str | Divergence = "reverse_kl", beta: float = 0.1) -> Tensor:
    """Per-pair f-DPO loss ``-log sigmoid(preference_logits)`` (f-DPO, Eq. 12; reverse KL: DPO, Eq. 7).

    Sequence log-probs ``[N]`` of the chosen and rejected responses under the policy and the reference.
    """
    logits = preference_logits(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, divergence, beta)
    return -torch.nn.functional.logsigmoid(logits)


def dpo_loss(chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             beta: float = 0.1) -> Tensor:
    """Standard DPO (Rafailov et al. 2023, Eq. 7): ``-log sigmoid(beta (log pi/pi_ref(y_w) - log pi/pi_ref(y_l)))``."""
    margin = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    return -torch.nn.functional.logsigmoid(beta * margin)


@dataclass
class PairStats:
    """What a batch of pairs says about training: loss, accuracy, implicit rewards and their margin."""

    loss: float
    accuracy: float
    chosen_reward: float
    rejected_reward: float
    margin: float


def pair_stats(loss: Tensor, chosen_logps: Tensor, rejected_logps: Tensor, ref_chosen_logps: Tensor,
               ref_rejected_logps: Tensor, divergence: str | Divergence, beta: float) -> PairStats:
    """Metrics of one batch: accuracy is the share of pairs whose chosen response has the larger implicit reward."""
    with torch.no_grad():
        chosen = implicit_reward(chosen_logps, ref_chosen_logps, divergence, beta).double()
        rejected = implicit_reward(rejected_logps, ref_rejected_logps, divergence, beta).double()
        logits = preference_logits(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, divergence,
                                   beta).double()
        return PairStats(float(loss.detach().double().mean()), float((logits > 0).double().mean()),
                         float(chosen.mean()), float(rejected.mean()), float(logits.mean()))


def _log_ratio(policy_logps: Tensor, reference_logps: Tensor) -> Tensor:
    t = policy_logps.double() - reference_logps.double()
    return t.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
