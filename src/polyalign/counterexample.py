"""The CLP paper's Section 6.2 counterexample (Wang et al. 2024, "Conditioned Language Policy"): parameter
averaging of independently trained experts (Rewarded Soups) can miss the optimum of the weighted reward, while
CLP's multi-task conditioning of the logit layer finds it.

Setup: one context, three outputs, ``R1 = (1, 0, 0.75)``, ``R2 = (0, 1, 0.75)``, a small KL strength alpha and
the paper's KL-regularised value ``V = E_pi[(1 - alpha) w.R] - alpha KL(pi || pi_ref)`` (Eq. 1), whose optimum is
``pi_w ∝ pi_ref exp(w.R / beta)``, ``beta = alpha / (1 - alpha)``. At ``w = (0.5, 0.5)`` the optimum puts almost
all its mass on output 3 (reward 0.75 for both objectives, against 0.5 for outputs 1 and 2).

What fails and what does not (the honest part):

* If a policy were its logits, the soup of the two optimal experts would be the logit average
  ``log pi_ref + (R1 + R2) / (2 beta)``: exactly optimal. So is MOD (reverse KL, :func:`combine_logprobs`) of the
  closed-form experts: it averages log-probabilities, not parameters (``mod_exact`` below, equal to the optimum).
* The soup fails when the parameters enter the policy non-linearly. Here each expert is a whole tiny Llama (body
  and logit layer) fine-tuned from one shared initialisation by exact gradient ascent on V; their parameter
  average (Eq. 3 with ``theta_i`` = expert i, via ``condition(model, "full", ...)``) is none of the experts and
  not their logit average. At alpha = 0.03 (and 0.05) it puts under 5% on output 3 on every seed tried, against
  99.9% (98.5%) for the optimum. At alpha = 0.1 it degrades without collapsing (36-69% on output 3, optimum
  84%): the failure needs the experts to move far from the initialisation (logit gaps ``~ 1 / beta``).
* MOD over the *trained* experts is only as good as their log-probabilities on the outputs they avoid, which
  V barely constrains (its gradient there is ``~ pi``): experts within 1e-3 of their optima in probability are
  off by many nats in those tails, and at alpha <= 0.05 MOD of them misses output 3 like the soup does
  (``mod``); at alpha = 0.1 it is close to the optimum.
* CLP (Algorithm 1 with exact expectations over the three outputs instead of samples, w ~ Dirichlet(1), alpha
  fixed at alpha_min so that Eq. 3's reference coefficient is 0) conditions only the logit layer
  (``condition(model, "logit", ...)``) on a body trained multi-task: its logits ``sum_i w_i W_i h`` are linear in
  w, so one body serves every weighting, and at ``w = (0.5, 0.5)`` it matches the optimum.

The model: a Llama with a vocabulary of four tokens (token 0 is the context, tokens 1-3 the outputs); the policy
is the next-token distribution after the context, restricted to the outputs (log-softmax over their logits).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import LlamaConfig, LlamaForCausalLM

from polyalign.combine import combine_logprobs
from polyalign.conditioning import ConditionedModel, condition, mix_coefficients, sample_weights

REWARDS = ((1.0, 0.0, 0.75), (0.0, 1.0, 0.75))  # [m, outputs]: R1, R2 of Section 6.2
OBJECTIVES = ("R1", "R2")
CONTEXT = 0  # the one context token
OUTPUTS = (1, 2, 3)  # the three outputs' token ids
ALPHA = 0.03  # small: the experts' logit gaps (1 / beta) must be large for the soup to fail


def rewards() -> Tensor:
    """The rewards of Section 6.2 as float64 ``[m, 3]``."""
    return torch.tensor(REWARDS, dtype=torch.float64)


def kl_strength(alpha: float) -> float:
    """beta = alpha / (1 - alpha): Eq. 1's ``(1 - alpha) R - alpha KL`` is ``(1 - alpha) (R - beta KL)``."""
    return alpha / (1 - alpha)


def build_model(seed: int, hidden_size: int = 8, layers: int = 1) -> LlamaForCausalLM:
    """A random tiny Llama (float64) over the vocabulary {context, output 1, output 2, output 3}, from a config."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=1 + len(OUTPUTS), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=8, tie_word_embeddings=False, pad_token_id=None,
                         bos_token_id=None, eos_token_id=None)
    return LlamaForCausalLM(config).double().eval()


def contexts(rows: int = 1) -> Tensor:
    """The context as input ids ``[rows, 1]``."""
    return torch.full((rows, 1), CONTEXT, dtype=torch.long)


def output_logprobs(logits: Tensor) -> Tensor:
    """The policy over the three outputs, ``[B, 3]``, from a causal LM's logits ``[B, T, V]`` (last position)."""
    return torch.log_softmax(logits[:, -1, list(OUTPUTS)].double(), dim=-1)


def policy_logprobs(model: torch.nn.Module) -> Tensor:
    """log pi(. | context) over the outputs, ``[3]``."""
    return output_logprobs(model(input_ids=contexts()).logits)[0]


def value(logprobs: Tensor, reference: Tensor, weights: Tensor, alpha: float) -> Tensor:
    """V = E_pi[(1 - alpha) w.R] - alpha KL(pi || pi_ref) (CLP Eq. 1), exact over the three outputs.

    ``logprobs`` ``[..., 3]``, ``reference`` ``[3]``, ``weights`` ``[..., m]``; returns ``[...]``.
    """
    p = logprobs.exp()
    reward = weights.to(torch.float64) @ rewards()
    return (p * ((1 - alpha) * reward - alpha * (logprobs - reference))).sum(-1)


def optimal_logprobs(reference: Tensor, weights: Tensor, alpha: float) -> Tensor:
    """The maximiser of :func:`value`: ``log pi_ref + w.R / beta - log Z``."""
    return torch.log_softmax(reference + (weights.to(torch.float64) @ rewards()) / kl_strength(alpha), dim=-1)


def train_expert(base: torch.nn.Module, objective: int, alpha: float = ALPHA, steps: int = 150,
                 lr: float = 0.05) -> torch.nn.Module:
    """Expert ``objective``: a copy of ``base`` with every parameter trained by Adam on the exact gradient of
    :func:`value` at ``w = e_objective`` (the raw material of Rewarded Soups and MOD)."""
    model = copy.deepcopy(base).train()
    reference = policy_logprobs(base).detach()
    weights = torch.eye(len(REWARDS), dtype=torch.float64)[objective]
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        (-value(policy_logprobs(model), reference, weights, alpha)).backward()
        optimiser.step()
    return model.eval()


def clp_logprobs(clp: ConditionedModel, weights: Tensor, alpha: float = ALPHA) -> Tensor:
    """CLP's policy ``[B, 3]`` for weightings ``[B, m]``: Eq. 3's coefficients ``((1 - beta) w, beta)`` per row."""
    copies, ref = mix_coefficients(weights, alpha, clp.f_mix, clp.alpha_min, clp.objectives)
    coefficients = torch.cat([copies, ref[:, None]], dim=1)
    logits = clp.forward_coefficients(input_ids=contexts(weights.shape[0]), coefficients=coefficients).logits
    return output_logprobs(logits)


def train_clp(base: torch.nn.Module, alpha: float = ALPHA, steps: int = 150, lr: float = 0.05, batch: int = 8,
              seed: int = 0) -> ConditionedModel:
    """CLP with the logit layer conditioned (m copies of lm_head) and the body shared, trained multi-task
    (Algorithm 1): each step draws ``batch`` weightings ``w ~ Dirichlet(1)`` and ascends the mean exact
    :func:`value` (expectations over the three outputs instead of samples; alpha fixed at alpha_min)."""
    model = copy.deepcopy(base).train()
    reference = policy_logprobs(base).detach()
    clp = condition(model, "logit", OBJECTIVES, alpha_min=alpha)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in clp.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        weights = torch.stack([sample_weights(len(OBJECTIVES), generator) for _ in range(batch)])
        optimiser.zero_grad()
        (-value(clp_logprobs(clp, weights, alpha), reference, weights, alpha).mean()).backward()
        optimiser.step()
    return clp.eval()


def soup(base: torch.nn.Module, experts: Sequence[torch.nn.Module], alpha: float = ALPHA) -> ConditionedModel:
    """Rewarded Soups as Eq. 3 over whole models: ``condition(base, "full", ...)`` with copy i set to expert i."""
    soup_model = condition(copy.deepcopy(base), "full", OBJECTIVES[:len(experts)], alpha_min=alpha)
    with torch.no_grad():
        for copy_i, expert in zip(soup_model.copies, experts, strict=True):
            params = dict(expert.named_parameters(remove_duplicate=False))
            for k, name in enumerate(soup_model.names):
                copy_i[k].copy_(params[name])
    return soup_model.eval()


def mod_logprobs(reference: Tensor, experts: Tensor, weights: Tensor) -> Tensor:
    """MOD's policy (reverse KL): :func:`combine_logprobs` of the experts' ``[M, 3]`` with the reference ``[3]``."""
    return combine_logprobs(reference, experts, weights.to(torch.float64))


@dataclass(frozen=True)
class Result:
    """The distributions over the three outputs at one weighting, and the value (Eq. 1) of each."""

    weights: Tensor
    reference: Tensor
    experts: Tensor  # [m, 3] log-probs
    expert_optima: Tensor  # [m, 3] closed-form log-probs at w = e_i
    distributions: dict[str, Tensor]  # name -> [3] probabilities: optimum, soup, clp, mod, mod_exact
    values: dict[str, float]


def run(seed: int = 0, alpha: float = ALPHA, weights: Sequence[float] = (0.5, 0.5), steps: int = 150,
        hidden_size: int = 8) -> Result:
    """Build, train both experts and CLP from one initialisation, and evaluate every method at ``weights``."""
    base = build_model(seed, hidden_size)
    w = torch.tensor(weights, dtype=torch.float64)
    with torch.no_grad():
        reference = policy_logprobs(base)
    experts = [train_expert(base, i, alpha, steps) for i in range(len(REWARDS))]
    clp = train_clp(base, alpha, steps, seed=seed)
    soup_model = soup(base, experts, alpha)
    with torch.no_grad():
        expert_lp = torch.stack([policy_logprobs(e) for e in experts])
        optima = torch.stack([optimal_logprobs(reference, e, alpha) for e in torch.eye(len(REWARDS),
                                                                                      dtype=torch.float64)])
        logprobs = {"optimum": optimal_logprobs(reference, w, alpha),
                    "soup": clp_logprobs(soup_model, w[None], alpha)[0],
                    "clp": clp_logprobs(clp, w[None], alpha)[0],
                    "mod": mod_logprobs(reference, expert_lp, w),
                    "mod_exact": mod_logprobs(reference, optima, w)}
    values = {name: float(value(lp, reference, w, alpha)) for name, lp in logprobs.items()}
    return Result(w, reference, expert_lp, optima, {k: v.exp() for k, v in logprobs.items()}, values)
