"""Prompting (CLP paper, Appendix A.2): one model trained multi-task with the weighting written only into its
prompt. No parameter is conditioned on ``w``: a single set of LoRA adapters (or parameter copy) serves every
weighting, which the model reads as ``Objective weights: a=0.30, b=0.70. KL strength alpha=0.010.`` in its
system prompt. At inference the same template is used.

It is :class:`~polyalign.policies.clp.CLP` with one copy whose coefficients are always ``(1, 0)`` and CONDPROMPT
on; the conditions each row carries are the weighting and alpha themselves.
"""

from __future__ import annotations

from typing import Any

import torch

from polyalign import checkpoint as ckpt
from polyalign.conditioning import check_alpha as check_clp_alpha
from polyalign.policies.clp import CLP, loader, weighting_text

KIND = "prompted"
COPY = "prompted"


class Prompted(CLP):
    """A prompt-conditioned policy: ``generate(prompts, w, alpha)`` writes (w, alpha) into each prompt.

    Weights: the simplex over ``objectives``; ``alpha`` in ``[alpha_min, 1]`` (None: alpha_min), told to the model
    in the prompt, never mixed into its parameters.
    """

    kind = KIND
    alpha_meaning = "KL strength in [alpha_min, 1], written into the prompt (CLP Appendix A.2)"

    def __init__(self, *args: Any, prompt_conditioning: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, prompt_conditioning=True, **kwargs)

    @classmethod
    def copy_names(cls, objectives: list[str], **options: Any) -> list[str]:
        return [COPY]

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        """Each row's condition ``[B, m + 1]``: its weights and its alpha."""
        a = float(check_clp_alpha(self.alpha_min if alpha is None else alpha, self.alpha_min))
        return torch.cat([weights.double(), torch.full((weights.shape[0], 1), a, dtype=torch.float64)], dim=1)

    def parameter_coefficients(self, conditions: torch.Tensor) -> torch.Tensor:
        """The one copy, whatever the weighting: ``(1, 0)`` per row."""
        out = torch.zeros(conditions.shape[0], 2, dtype=torch.float64)
        out[:, 0] = 1.0
        return out

    def describe_weighting(self, condition: torch.Tensor) -> str:
        return weighting_text(self.objectives, condition[:-1].tolist(), float(condition[-1]))


ckpt.register_loader(KIND, loader(Prompted))
