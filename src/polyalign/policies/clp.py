"""CLP, conditioned language policies (Wang et al. 2024): one model whose conditioned parameters are a weighted
mix of per-objective copies and the frozen reference (Algorithm 2, Eq. 3), decoded by the shared engine.

The bank holds one model and two roles: the reference (coefficients ``(0, ..., 0, 1)``: exactly theta_ref, for
KL) and the policy (``((1 - f_mix(alpha)) w, f_mix(alpha))`` per row). Both run in one forward per step: LoRA
copies mix per row exactly (``W x + sum_i c_i B_i A_i x``); parameter copies run each conditioned module once
per distinct weighting with that weighting's cached mixed parameters (:mod:`polyalign.conditioning`).

The unconditioned parameters stay frozen at the reference, so ``f_mix(alpha) = 1`` is exactly ``pi_ref`` for
every selector and the reference costs no second model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyalign import checkpoint as ckpt
from polyalign.conditioning import (
    ConditionedModel,
    LoRAConditionedModel,
    check_copy_index,
    condition,
    f_mix_inverse,
    mix_coefficients,
    parse_selector,
)
from polyalign.decode import SelectRole
from polyalign.errors import ConfigError, ModelLoadError
from polyalign.experts import Expert, ModelBank, _Group, encode_prompt
from polyalign.models import DEFAULT_MODEL, LoadedModel, load_model
from polyalign.policies.base import EnginePolicy
from polyalign.weights import SIMPLEX

KIND = "clp"
Conditioned = ConditionedModel | LoRAConditionedModel


class _CoefficientForward(nn.Module):
    """The conditioned model as the bank calls a causal LM, with ``coefficients=`` per row."""

    def __init__(self, conditioned: Conditioned) -> None:
        super().__init__()
        self.conditioned = conditioned
        self.config = conditioned.model.config

    def forward(self, *, coefficients: torch.Tensor, **kwargs):
        return self.conditioned.forward_coefficients(coefficients=coefficients, **kwargs)


class ConditionedBank(ModelBank):
    """A bank of one conditioned model in two roles: slot 0 the reference, slot 1 the policy (or the policy alone,
    slot 0, with ``reference=False``). With ``describe`` (CONDPROMPT) the policy's rows also read their weighting
    as a system prompt; the reference's never do."""

    def __init__(self, loaded: LoadedModel, conditioned: Conditioned, *, chat: bool = True,
                 describe: Callable[[torch.Tensor], str] | None = None, reference: bool = True) -> None:
        names = ["reference", "policy"] if reference else ["policy"]
        self.roles = [Expert(loaded.name, name=n) for n in names]
        self._slot, self.n_slots, self.chat = list(range(len(names))), len(names), chat
        self.conditioned, self.describe, self.with_reference = conditioned, describe, reference
        none = [None] * len(names)
        self.groups = [_Group(loaded, _CoefficientForward(conditioned), list(range(len(names))), none, none)]
        self._finish()

    def encode(self, prompts: Sequence[str], max_new_tokens: int = 0, conditions: torch.Tensor | None = None
               ) -> list[list[list[int]]]:
        if self.describe is None:
            return super().encode(prompts, max_new_tokens)
        if conditions is None:
            raise ConfigError("a prompt-conditioned CLP encodes prompts with their weightings: use the CLP policy")
        tok, chat = self.tokenizer, self.chat
        policy = [encode_prompt(tok, p, self.describe(c), chat) for p, c in zip(prompts, conditions, strict=True)]
        encoded = [[self.reference_ids(prompts), policy] if self.with_reference else [policy]]
        self.check_context(encoded, len(prompts), max_new_tokens)
        return encoded

    def reference_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """What the reference reads for each prompt: never the CONDPROMPT text."""
        return [encode_prompt(self.tokenizer, p, None, self.chat) for p in prompts]

    def row_coefficients(self, group: _Group, conditions: torch.Tensor | None, batch: int) -> torch.Tensor:
        if conditions is None or conditions.shape != (batch, len(self.conditioned.objectives) + 1):
            raise ConfigError("a CLP bank decodes with Eq. 3's coefficients per prompt: use the CLP policy")
        if not self.with_reference:
            return conditions.double().to(self.device)
        reference = reference_coefficients(batch, len(self.conditioned.objectives))
        return torch.cat([reference, conditions.double()]).to(self.device)


def reference_coefficients(rows: int, m: int) -> torch.Tensor:
    """Eq. 3's coefficients of pi_ref, ``(0, ..., 0, 1)``: float64 ``[rows, m + 1]``."""
    reference = torch.zeros(rows, m + 1, dtype=torch.float64)
    reference[:, -1] = 1.0
    return reference


class CLP(EnginePolicy):
    """A conditioned language policy: ``generate(prompts, w, alpha)`` decodes with theta_S(alpha, w) (Eq. 3).

    Weights: the simplex over ``objectives``. ``alpha``: the KL strength in ``[alpha_min, 1]``; the policy mixes
    toward the reference by ``f_mix(alpha)`` (Eq. 4); None means ``alpha_min`` (the least regularised policy).
    Build a fresh one with :meth:`create` (every copy at the reference, Algorithm 1), or load a trained one
    with :func:`polyalign.load`.
    """

    weight_domain = SIMPLEX
    alpha_meaning = "KL strength in [alpha_min, 1]: theta mixes toward the reference by f_mix(alpha) (CLP Eq. 3-4)"

    def __init__(self, conditioned: Conditioned, loaded: LoadedModel, *, chat: bool = True,
                 prompt_conditioning: bool = False, decode_reference: bool = True) -> None:
        self.conditioned, self.loaded, self.prompt_conditioning = conditioned, loaded, prompt_conditioning
        bank = ConditionedBank(loaded, conditioned, chat=chat, reference=decode_reference,
                               describe=self.describe_weighting if prompt_conditioning else None)
        if decode_reference:
            super().__init__(bank, SelectRole(1), 0, conditioned.objectives)
        else:  # the trainer scores the reference by teacher forcing instead (half the rows to decode)
            super().__init__(bank, SelectRole(0), None, conditioned.objectives)

    def without_reference(self) -> CLP:
        """The same policy (sharing its copies) decoding the policy rows only: no ``ref_logprobs``, half the rows.
        Training scores the reference afterwards by teacher forcing (:mod:`polyalign.training.recipe`)."""
        return CLP(self.conditioned, self.loaded, chat=self.bank.chat, prompt_conditioning=self.prompt_conditioning,
                   decode_reference=False)

    def reference_prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """What the reference reads for each prompt (no CONDPROMPT text): the prompt ids its log-probs need."""
        return self.bank.reference_ids(prompts)

    def describe_weighting(self, coefficients: torch.Tensor) -> str:
        """CONDPROMPT (CLP Appendix A.2): the weighting as text, recovered from one row of Eq. 3's coefficients
        ``((1 - beta) w, beta)``; the policy reads it as a system prompt."""
        return condprompt(self.objectives, coefficients, self.conditioned.f_mix, self.alpha_min)

    @classmethod
    def create(cls, objectives: Sequence[str], model: str = DEFAULT_MODEL, selector: str = "lora",
               f_mix: str = "softmdp", alpha_min: float = 0.01, *, rank: int = 8, lora_alpha: float = 16.0,
               seed: int = 0, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               chat: bool = True, prompt_conditioning: bool = False) -> CLP:
        """A new CLP on ``model``: m copies of the parameters chosen by ``selector`` (or m LoRA adapters for
        ``lora[:targets]``), all equal to the reference. ``prompt_conditioning`` also writes each row's weighting
        into its prompt (CONDPROMPT, Appendix A.2)."""
        lora = parse_selector(selector).kind == "lora"  # a bad selector fails before the model loads
        loaded = load_model(model, device=device, dtype=dtype, cached=False)  # private: training changes it
        options: dict[str, Any] = {}
        if lora:
            options = {"rank": rank, "lora_alpha": lora_alpha,
                       "generator": torch.Generator(device=loaded.device).manual_seed(seed)}
        conditioned = condition(loaded.model, selector, objectives, f_mix, alpha_min=alpha_min, **options)
        return cls(conditioned, loaded, chat=chat, prompt_conditioning=prompt_conditioning)

    @property
    def alpha_min(self) -> float:
        return self.conditioned.alpha_min

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        """Eq. 3's coefficients per prompt ``[B, m + 1]``: ``(1 - f_mix(alpha)) w`` and ``f_mix(alpha)``."""
        copy_c, ref_c = mix_coefficients(weights, alpha, self.conditioned.f_mix, self.alpha_min, self.objectives)
        return torch.cat([copy_c, ref_c.reshape(-1, 1)], dim=1)

    # -- checkpoints -------------------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """What ``policy.json`` records: enough to rebuild this policy on its base model."""
        c = self.conditioned
        meta = {"kind": KIND, "format": 1, "base_model": self.loaded.name, "selector": c.selector,
                "objectives": list(c.objectives), "f_mix": c.f_mix, "alpha_min": c.alpha_min,
                "chat": self.bank.chat, "prompt_conditioning": self.prompt_conditioning,
                "base_fingerprint": self.base_fingerprint}
        if isinstance(c, LoRAConditionedModel):
            meta |= {"rank": c.rank, "lora_alpha": c.scaling * c.rank}
        return meta

    @cached_property
    def base_fingerprint(self) -> dict[str, Any]:
        """The frozen base model's fingerprint, computed once (it never changes; every checkpoint records it)."""
        return ckpt.fingerprint(self.conditioned.model)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The copies (or LoRA factors): everything a checkpoint stores besides the frozen base."""
        return {k: v for k, v in self.conditioned.state_dict().items()
                if not k.startswith("model.") and not k.startswith("reference_")}

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint directory atomically (``policy.json``, ``policy.safetensors``)."""
        with ckpt.atomic_dir(path) as folder:
            self.write_to(folder, extra)
        return Path(path)

    def write_to(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        ckpt.write_meta(folder, self.meta() | (extra or {}))
        ckpt.save_tensors(folder / ckpt.WEIGHTS_FILE, self.trainable_state())

    def load_trainable(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Copy checkpoint tensors into the copies; refuse missing, extra or mis-shaped ones by name."""
        own = self.trainable_state()
        missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or extra:
            raise ModelLoadError(f"checkpoint {where} does not match this policy's parameters (missing "
                                 f"{missing[:3]}, unexpected {extra[:3]}): was it saved with another selector?")
        for name, value in tensors.items():
            if value.shape != own[name].shape:
                raise ModelLoadError(f"checkpoint {where}: {name} has shape {tuple(value.shape)}, this policy "
                                     f"needs {tuple(own[name].shape)} (another base model?)")
        with torch.no_grad():
            for name, target in own.items():
                target.copy_(tensors[name])

    def restore(self, folder: Path, meta: dict[str, Any], base: str) -> None:
        """The copies of the checkpoint in ``folder``, after refusing one trained on another base model."""
        where = repr(str(folder))
        if "base_fingerprint" in meta:
            ckpt.check_fingerprint(meta["base_fingerprint"], self.conditioned.model, where, base)
        self.load_trainable(ckpt.load_tensors(folder / ckpt.WEIGHTS_FILE, "checkpoint weights"), where)

    # -- exports -----------------------------------------------------------------------------------------------

    def export_expert(self, i: int, path: str | Path) -> Expert:
        """Copy ``i`` as a standalone expert MOD accepts: a peft adapter for LoRA-CLP (on the base model), a merged
        model directory otherwise. Returns the :class:`Expert` naming it."""
        path = Path(path)
        c = self.conditioned
        check_copy_index(i, len(c.objectives))
        if isinstance(c, LoRAConditionedModel):
            _save_peft_adapter(c, i, path, self.loaded.name)
            return Expert(self.loaded.name, adapter=str(path), name=c.objectives[i])
        _save_merged(self.loaded, c.export_copy(i), path)
        return Expert(str(path), name=c.objectives[i])


def condprompt(objectives: Sequence[str], coefficients: torch.Tensor, f_mix: str, alpha_min: float) -> str:
    """``Objective weights: concise=0.30, sentiment=0.70. KL strength alpha=0.010.`` for a coefficient row."""
    beta = float(coefficients[-1])
    alpha = float(f_mix_inverse(min(max(beta, 0.0 if f_mix == "softmdp" else alpha_min), 1.0), f_mix, alpha_min))
    if beta < 1.0:
        w = (coefficients[:-1] / (1.0 - beta)).tolist()
        weights = ", ".join(f"{n}={x:.2f}" for n, x in zip(objectives, w, strict=True))
    else:
        weights = "none (answer as the reference model)"
    return f"Objective weights: {weights}. KL strength alpha={alpha:.3f}."


def _save_peft_adapter(c: LoRAConditionedModel, i: int, path: Path, base: str) -> None:
    from peft import LoraConfig

    modules = [n.rpartition(".")[0] for n in c.names]
    config = LoraConfig(r=c.rank, lora_alpha=c.scaling * c.rank, target_modules=modules, lora_dropout=0.0,
                        bias="none", base_model_name_or_path=base)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(path))
    tensors = {}
    for k, module in enumerate(modules):
        tensors[f"base_model.model.{module}.lora_A.weight"] = c.lora_A[i][k]
        tensors[f"base_model.model.{module}.lora_B.weight"] = c.lora_B[i][k]
    ckpt.save_tensors(path / "adapter_model.safetensors", tensors)


def _save_merged(loaded: LoadedModel, state: dict[str, torch.Tensor], path: Path) -> None:
    import copy

    model = copy.deepcopy(loaded.model)
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is inp.weight:
        out_name = next(n for n, m in model.named_modules() if m is out)
        in_name = next(n for n, m in model.named_modules() if m is inp)
        if not torch.equal(state[f"{out_name}.weight"], state[f"{in_name}.weight"]):
            out.weight = nn.Parameter(out.weight.detach().clone())  # the copy conditioned one alias only
            model.config.tie_word_embeddings = False
            if hasattr(model.config, "get_text_config"):
                model.config.get_text_config().tie_word_embeddings = False
    model.load_state_dict(state)
    model.save_pretrained(str(path))
    loaded.tokenizer.save_pretrained(str(path))


def load_clp(path: Path, meta: dict[str, Any], *, model: str | None = None, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, chat: bool | None = None) -> CLP:
    """Rebuild a CLP from its checkpoint (``model``: the same base model at another location)."""
    try:
        objectives, selector = meta["objectives"], meta["selector"]
        base = model or meta["base_model"]
        f_mix, alpha_min = meta["f_mix"], meta["alpha_min"]
    except KeyError as exc:
        raise ModelLoadError(f"checkpoint {str(path)!r}: policy.json lacks {exc.args[0]!r}") from None
    options = {"rank": meta.get("rank", 8), "lora_alpha": meta.get("lora_alpha", 16.0)}
    policy = CLP.create(objectives, base, selector, f_mix, alpha_min, device=device, dtype=dtype,
                        chat=meta.get("chat", True) if chat is None else chat,
                        prompt_conditioning=bool(meta.get("prompt_conditioning", False)), **options)
    policy.restore(path, meta, base)
    return policy


ckpt.register_loader(KIND, load_clp)
