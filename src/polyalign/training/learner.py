"""What a training step differentiates: the conditioned policy's log-probs of sampled responses and the m-output
value baseline, behind one ``nn.Module`` forward so that accelerate's DDP syncs both gradients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polyalign.conditioning import ConditionedModel, LoRAConditionedModel
from polyalign.training.estimators import token_entropy


@dataclass
class Batch:
    """Prompts left-padded to P, responses right-padded to T: ``[pad.. prompt | response ..pad]``, so that
    positions ``P-1 .. P+T-2`` predict the response and ``P-1`` (the last prompt token) feeds the value model."""

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    response_ids: Tensor
    response_mask: Tensor
    prompt_width: int


def make_batch(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
               device: torch.device) -> Batch:
    """The :class:`Batch` of prompts and their (non-empty) responses."""
    width = max(len(p) for p in prompt_ids)
    length = max(len(r) for r in response_ids)
    ids, mask, responses, rmask = [], [], [], []
    for p, r in zip(prompt_ids, response_ids, strict=True):
        left, right = width - len(p), length - len(r)
        ids.append([pad_id] * left + list(p) + list(r) + [pad_id] * right)
        mask.append([0] * left + [1] * (len(p) + len(r)) + [0] * right)
        responses.append(list(r) + [pad_id] * right)
        rmask.append([1] * len(r) + [0] * right)
    attention = torch.tensor(mask, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return Batch(torch.tensor(ids, device=device), attention, positions, torch.tensor(responses, device=device),
                 torch.tensor(rmask, device=device, dtype=torch.float32), width)


class Learner(nn.Module):
    """The conditioned policy (its copies train; the base and theta_ref stay frozen) and the value model: a linear
    head with m outputs on the policy's last hidden state at the prompt's end (layer-normalised, detached: the
    value loss never moves the policy). ``V(x) = sum_i w_i V_i(x)`` (CLP Algorithm 1)."""

    def __init__(self, conditioned: ConditionedModel | LoRAConditionedModel, vocab_size: int, pad_id: int,
                 objectives: int | None = None) -> None:
        """``objectives``: m, the value model's outputs (default: one per copy, as in CLP)."""
        super().__init__()
        self.conditioned, self.vocab_size, self.pad_id = conditioned, vocab_size, pad_id
        base = conditioned.model
        hidden = base.config.get_text_config().hidden_size if hasattr(base.config, "get_text_config") \
            else base.config.hidden_size
        param = next(base.parameters())
        self.value = nn.Linear(hidden, objectives or len(conditioned.objectives), dtype=torch.float32,
                               device=param.device)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.conditioned.parameters() if p.requires_grad]

    def _run(self, batch: Batch, coefficients: Tensor, hidden: bool):
        length = batch.response_ids.shape[1]
        out = self.conditioned.forward_coefficients(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
            coefficients=coefficients, output_hidden_states=hidden, use_cache=False, logits_to_keep=length + 1)
        logprobs = torch.log_softmax(out.logits[:, :-1, : self.vocab_size].float(), dim=-1)
        return out, logprobs, logprobs.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def token_logprobs(self, batch: Batch, coefficients: Tensor) -> Tensor:
        """Per-token log-probs ``[B, T]`` of the responses at ``coefficients`` (e.g. the reference's), no grad."""
        return self._run(batch, coefficients, hidden=False)[2]

    def forward(self, batch: Batch, coefficients: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token log-probs of the responses ``[B, T]``, the value model's outputs ``[B, m]`` and the mean
        entropy of the policy over response positions (detached, for the metrics)."""
        out, logprobs, tokens = self._run(batch, coefficients, hidden=True)
        features = out.hidden_states[-1][:, batch.prompt_width - 1].detach().float()
        features = nn.functional.layer_norm(features, features.shape[-1:])  # a scale the value lr can trust
        with torch.no_grad():
            entropy = token_entropy(logprobs, batch.response_mask)
        return tokens, self.value(features), entropy
