"""A plain model as a policy: one point on a chart, decoded by the same engine as every method."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polyalign.decode import SelectRole
from polyalign.experts import Expert, ModelBank
from polyalign.policies.base import EnginePolicy


class Plain(EnginePolicy):
    """A model (optionally with a LoRA adapter or a system prompt) that ignores the weights. Its reference (by
    default the same model without adapter or system prompt) gives the KL; an identical one costs nothing."""

    steerable = False
    alpha_meaning = "none: a plain model is not steered"

    def __init__(self, model: Expert, reference: Expert | None = None, objectives: Sequence[str] = ("model",), *,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 chat: bool = True) -> None:
        reference = reference if reference is not None else Expert(model.model, name="reference")
        bank = ModelBank([reference, model], device=device, dtype=dtype, chat=chat)
        super().__init__(bank, SelectRole(bank.slot(1)), bank.slot(0), objectives)
        self.model = model
