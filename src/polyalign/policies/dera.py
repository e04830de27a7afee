"""DeRa, decoding-time realignment (Liu et al. 2024): ``pi ∝ pi_ref^(1 - lambda) pi_aligned^lambda``.

MOD's reverse-KL combination with one expert; the only new thing is how ``alpha`` becomes ``lambda``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polyalign.errors import ConfigError
from polyalign.experts import Expert
from polyalign.policies.mod import MOD
from polyalign.weights import REAL, SCALAR


def kl_strength(alpha: float) -> float:
    """beta of the CLP paper's reward ``(1 - alpha) R - alpha KL`` scaled to ``R - beta KL``: alpha / (1 - alpha)."""
    return alpha / (1.0 - alpha)


def dera_lambda(alpha: float, trained_alpha: float) -> float:
    """lambda that realigns a model trained at ``trained_alpha`` to ``alpha``: beta_trained / beta (DeRa, Eq. 7)."""
    if alpha <= 0.0:
        raise ConfigError("alpha = 0 (no KL regularisation) is an infinite lambda: give alpha > 0")
    return kl_strength(trained_alpha) / kl_strength(alpha)


class DeRa(MOD):
    """DeRa over one aligned model and its reference. The weight is ``lambda`` (1: the aligned model, 0: the
    reference, > 1: extrapolate); with ``alpha`` (and the ``trained_alpha`` the model was aligned at) the
    weight scales ``lambda(alpha) = beta(trained_alpha) / beta(alpha)``.
    """

    weight_domain = SCALAR

    def __init__(self, aligned: Expert, reference: Expert, objective: str = "aligned",
                 trained_alpha: float | None = None, **kwargs) -> None:
        if reference is None:
            raise ConfigError("DeRa needs the reference model it interpolates toward")
        if trained_alpha is not None and not 0.0 < trained_alpha < 1.0:
            raise ConfigError(f"trained_alpha must lie in (0, 1), got {trained_alpha}")
        super().__init__([aligned], reference, "reverse_kl", [objective], **kwargs)
        self.trained_alpha = trained_alpha

    @property
    def alpha_meaning(self) -> str:  # type: ignore[override]
        return ("KL strength of the CLP paper's (1 - alpha) R - alpha KL; lambda = beta(trained_alpha) / beta(alpha)"
                + ("" if self.trained_alpha is not None else " (needs trained_alpha)"))

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        if alpha is None:
            return weights
        if self.trained_alpha is None:
            raise ConfigError("DeRa maps alpha to lambda only when it knows the alpha its model was aligned at: "
                              "pass trained_alpha=..., or give lambda as the weight")
        return weights * dera_lambda(alpha, self.trained_alpha)


class DeRaOverObjectives(DeRa):
    """DeRa in a comparison over several objectives (CLP paper, Section 5): its aligned model was trained at one
    weighting, so weights cannot steer it; alpha does, as ``lambda(alpha)``. Every weighting decodes the same."""

    weight_domain = REAL
    steerable = False

    def __init__(self, aligned: Expert, reference: Expert, objectives: Sequence[str],
                 trained_alpha: float | None = None, **kwargs) -> None:
        super().__init__(aligned, reference, "aligned", trained_alpha, **kwargs)
        self.objectives = list(objectives)

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        return super().head_weights(torch.ones(weights.shape[0], 1, dtype=weights.dtype), alpha)
