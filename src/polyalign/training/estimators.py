"""The maths of one training step (CLP Algorithm 1; DESIGN.md, "Training"), as pure tensor functions.

    reward    = (1 - alpha) w . R(x, y) - alpha KL(pi || pi_ref)(x, y)     KL summed over the response's tokens
    REINFORCE : advantage = reward - V(x),  V = sum_i w_i V_i(x) (an m-output value model), batch-normalised
    RLOO      : advantage = reward - mean of the other k - 1 rewards of the same prompt (Ahmadian et al. 2024)
    loss      = - mean_b advantage_b * sum_t log pi(y_bt | x_b, y_b<t)
"""

from __future__ import annotations

import torch
from torch import Tensor

from polyalign.errors import ConfigError

EPS = 1e-6


def sequence_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Single-sample KL(pi || pi_ref) of each response: ``sum_t mask (log pi - log pi_ref)``, ``[B]``."""
    return ((logprobs - ref_logprobs) * mask).sum(-1)


def scalarised_reward(rewards: Tensor, weights: Tensor, alpha: float | Tensor, kl: Tensor) -> Tensor:
    """``(1 - alpha) w . R - alpha KL`` per response (CLP Algorithm 1; Eq. 1 inside the expectation).

    ``rewards [B, m]``, ``weights [m]`` or ``[B, m]``, ``alpha`` a number or ``[B]``, ``kl [B]``.
    """
    rewards = rewards.double()
    weights = torch.as_tensor(weights, dtype=torch.float64, device=rewards.device)
    alpha = torch.as_tensor(alpha, dtype=torch.float64, device=rewards.device)
    return (1 - alpha) * (rewards * weights).sum(-1) - alpha * kl.double()


def combined_value(values: Tensor, weights: Tensor) -> Tensor:
    """The value baseline of a weighting: ``V(x) = sum_i w_i V_i(x)`` from the value model's m outputs."""
    weights = torch.as_tensor(weights, dtype=values.dtype, device=values.device)
    return (values * weights).sum(-1)


def normalise(advantages: Tensor, mean: Tensor | float | None = None, std: Tensor | float | None = None) -> Tensor:
    """Batch-normalised advantages ``(A - mean) / (std + eps)``; pass ``mean``/``std`` gathered over processes."""
    mean = advantages.mean() if mean is None else mean
    std = advantages.std(unbiased=False) if std is None else std
    return (advantages - mean) / (std + EPS)


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """Leave-one-out advantages for ``rewards [P * k]`` grouped by prompt (k consecutive samples each)."""
    if k < 2:
        raise ConfigError(f"RLOO needs k >= 2 samples per prompt, got {k}")
    if rewards.shape[0] % k:
        raise ConfigError(f"{rewards.shape[0]} rewards do not split into groups of k = {k}")
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


def policy_gradient_loss(logprobs: Tensor, mask: Tensor, advantages: Tensor) -> Tensor:
    """REINFORCE's surrogate ``- mean_b A_b sum_t mask log pi``: its gradient is the policy gradient."""
    return -(advantages.detach().to(logprobs.dtype) * (logprobs * mask).sum(-1)).mean()


def value_loss(values: Tensor, rewards: Tensor) -> Tensor:
    """Squared error of the value baseline against the scalarised reward."""
    return ((values - rewards.detach().to(values.dtype)) ** 2).mean()


def token_entropy(logprobs: Tensor, mask: Tensor) -> Tensor:
    """Mean entropy of the policy's next-token distributions over response positions, from log-probs
    ``[B, T, V]`` and the response mask ``[B, T]``."""
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return (entropy * mask).sum() / mask.sum().clamp(min=1)
