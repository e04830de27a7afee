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

import copy
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
    slot 0, with ``reference=False``). Each policy row carries its *condition* (the policy's head weights);
    ``coefficients`` turns conditions into Eq. 3's coefficient rows (by default they are those rows). With
    ``describe`` (CONDPROMPT) the policy's rows also read their condition as a system prompt; the reference's never
    do."""

    def __init__(self, loaded: LoadedModel, conditioned: Conditioned, *, chat: bool = True,
                 describe: Callable[[torch.Tensor], str] | None = None, reference: bool = True,
                 coefficients: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        names = ["reference", "policy"] if reference else ["policy"]
        self.roles = [Expert(loaded.name, name=n) for n in names]
        self._slot, self.n_slots, self.chat = list(range(len(names))), len(names), chat
        self.conditioned, self.describe, self.with_reference = conditioned, describe, reference
        self.coefficients = coefficients or (lambda conditions: conditions)
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
        copies = len(self.conditioned.objectives)
        coefficients = None if conditions is None else self.coefficients(conditions)
        if coefficients is None or coefficients.shape != (batch, copies + 1):
            raise ConfigError("a CLP bank decodes with Eq. 3's coefficients per prompt: use the CLP policy")
        if not self.with_reference:
            return coefficients.double().to(self.device)
        return torch.cat([reference_coefficients(batch, copies), coefficients.double()]).to(self.device)


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
    kind = KIND

    def __init__(self, conditioned: Conditioned, loaded: LoadedModel, *, objectives: Sequence[str] | None = None,
                 chat: bool = True, prompt_conditioning: bool = False, decode_reference: bool = True) -> None:
        self.conditioned, self.loaded, self.prompt_conditioning = conditioned, loaded, prompt_conditioning
        self._objectives = list(objectives) if objectives is not None else list(conditioned.objectives)
        self._bind(chat, decode_reference)

    def _bind(self, chat: bool, decode_reference: bool) -> None:
        bank = ConditionedBank(self.loaded, self.conditioned, chat=chat, reference=decode_reference,
                               describe=self.describe_weighting if self.prompt_conditioning else None,
                               coefficients=self.parameter_coefficients)
        if decode_reference:
            EnginePolicy.__init__(self, bank, SelectRole(1), 0, self._objectives)
        else:  # the trainer scores the reference by teacher forcing instead (half the rows to decode)
            EnginePolicy.__init__(self, bank, SelectRole(0), None, self._objectives)

    def without_reference(self) -> CLP:
        """The same policy (sharing its copies) decoding the policy rows only: no ``ref_logprobs``, half the rows.
        Training scores the reference afterwards by teacher forcing (:mod:`polyalign.training.recipe`)."""
        other = copy.copy(self)
        other._bind(self.bank.chat, decode_reference=False)
        return other

    def reference_prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """What the reference reads for each prompt (no CONDPROMPT text): the prompt ids its log-probs need."""
        return self.bank.reference_ids(prompts)

    def parameter_coefficients(self, conditions: torch.Tensor) -> torch.Tensor:
        """Eq. 3's coefficients ``[B, copies + 1]`` for the conditions :meth:`head_weights` gave (for CLP they are
        those coefficients already)."""
        return conditions

    def reference_row(self) -> torch.Tensor:
        """Eq. 3's coefficients of pi_ref for this policy's copies: ``[1, copies + 1]``."""
        return reference_coefficients(1, len(self.conditioned.objectives))

    def describe_weighting(self, condition: torch.Tensor) -> str:
        """CONDPROMPT (CLP Appendix A.2): the weighting as text, recovered from one row of Eq. 3's coefficients
        ``((1 - beta) w, beta)``; the policy reads it as a system prompt."""
        return condprompt(self.objectives, condition, self.conditioned.f_mix, self.alpha_min)

    @classmethod
    def create(cls, objectives: Sequence[str], model: str = DEFAULT_MODEL, selector: str = "lora",
               f_mix: str = "softmdp", alpha_min: float = 0.01, *, rank: int = 8, lora_alpha: float = 16.0,
               seed: int = 0, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
               chat: bool = True, prompt_conditioning: bool = False, **options: Any) -> CLP:
        """A new policy on ``model``: copies of the parameters chosen by ``selector`` (or LoRA adapters for
        ``lora[:targets]``), all equal to the reference (Algorithm 1); for CLP one copy per objective.
        ``prompt_conditioning`` also writes each row's weighting into its prompt (CONDPROMPT, Appendix A.2);
        ``options`` go to the subclass (e.g. MORLHF's points)."""
        copies = cls.copy_names(list(objectives), **options)
        lora = parse_selector(selector).kind == "lora"  # a bad selector fails before the model loads
        loaded = load_model(model, device=device, dtype=dtype, cached=False)  # private: training changes it
        extra: dict[str, Any] = {}
        if lora:
            extra = {"rank": rank, "lora_alpha": lora_alpha,
                     "generator": torch.Generator(device=loaded.device).manual_seed(seed)}
        conditioned = condition(loaded.model, selector, copies, f_mix, alpha_min=alpha_min, **extra)
        return cls(conditioned, loaded, objectives=objectives, chat=chat,
                   prompt_conditioning=prompt_conditioning, **options)

    @classmethod
    def copy_names(cls, objectives: list[str], **options: Any) -> list[str]:
        """The names of the parameter copies: for CLP, one per objective (Eq. 3)."""
        return objectives

    @classmethod
    def options_from_meta(cls, meta: dict[str, Any], where: str) -> dict[str, Any]:
        """The subclass's own :meth:`create` options recorded in ``policy.json`` (none for CLP)."""
        return {}

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
        meta = {"kind": self.kind, "format": 1, "base_model": self.loaded.name, "selector": c.selector,
                "objectives": list(self.objectives), "copies": list(c.objectives), "f_mix": c.f_mix,
                "alpha_min": c.alpha_min,
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
    return weighting_text(objectives, (coefficients[:-1] / (1.0 - beta)).tolist() if beta < 1.0 else None, alpha)


def weighting_text(objectives: Sequence[str], weights: Sequence[float] | None, alpha: float) -> str:
    """The CONDPROMPT text of a weighting (None: the reference's, every weight mixed away)."""
    if weights is None:
        text = "none (answer as the reference model)"
    else:
        text = ", ".join(f"{n}={float(x):.2f}" for n, x in zip(objectives, weights, strict=True))
    return f"Objective weights: {text}. KL strength alpha={alpha:.3f}."


def parse_weighting_text(text: str, objectives: Sequence[str]) -> tuple[list[float] | None, float]:
    """The weighting and alpha a CONDPROMPT text states (:func:`weighting_text`'s inverse, to its 2 and 3 decimals)."""
    import re

    match = re.fullmatch(r"Objective weights: (.*)\. KL strength alpha=([0-9.]+)\.", text.strip())
    if match is None:
        raise ConfigError(f"not a CONDPROMPT weighting text: {text!r}")
    if match[1].startswith("none"):
        return None, float(match[2])
    pairs = dict(item.split("=") for item in match[1].split(", "))
    if sorted(pairs) != sorted(objectives):
        raise ConfigError(f"the text names {sorted(pairs)}, the objectives are {list(objectives)}")
    return [float(pairs[n]) for n in objectives], float(match[2])


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


def architecture(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """What :meth:`CLP.create` needs from a ``policy.json`` to rebuild its policy at the reference."""
    try:
        arch = {"objectives": meta["objectives"], "selector": meta["selector"], "f_mix": meta["f_mix"],
                "alpha_min": meta["alpha_min"], "base_model": meta["base_model"]}
    except KeyError as exc:
        raise ModelLoadError(f"checkpoint {where}: policy.json lacks {exc.args[0]!r}") from None
    return arch | {"rank": meta.get("rank", 8), "lora_alpha": meta.get("lora_alpha", 16.0),
                   "chat": meta.get("chat", True), "prompt_conditioning": bool(meta.get("prompt_conditioning"))}


def fresh(cls: type[CLP], arch: dict[str, Any], *, model: str | None = None, device: str | torch.device | None = None,
          dtype: str | torch.dtype | None = None, chat: bool | None = None, **options: Any) -> CLP:
    """A ``cls`` policy with the architecture ``arch`` (:func:`architecture`), every copy at the reference, on the
    base model ``model`` (default: the one ``arch`` names)."""
    return cls.create(arch["objectives"], model or arch["base_model"], arch["selector"], arch["f_mix"],
                      arch["alpha_min"], rank=arch["rank"], lora_alpha=arch["lora_alpha"], device=device, dtype=dtype,
                      chat=arch["chat"] if chat is None else chat, prompt_conditioning=arch["prompt_conditioning"],
                      **options)


def loader(cls: type[CLP]) -> Callable[..., CLP]:
    """The checkpoint loader of a conditioned policy class: rebuild it from ``policy.json``, then restore the copies
    (``model``: the same base model at another location)."""

    def load(path: Path, meta: dict[str, Any], *, model: str | None = None, **placement: Any) -> CLP:
        where = repr(str(path))
        policy = fresh(cls, architecture(meta, where), model=model, **cls.options_from_meta(meta, where), **placement)
        policy.restore(path, meta, model or meta["base_model"])
        return policy

    return load


ckpt.register_loader(KIND, loader(CLP))
