"""Experts and the batched next-token log-probs MOD combines.

An :class:`Expert` is a model, optionally with a PEFT LoRA adapter and/or a system prompt. An
:class:`ExpertBank` holds a reference and M experts and runs them as *one forward per distinct set of
weights* at each step: experts that share a checkpoint stack their rows into one batch (persona rows
with different system prompts; LoRA rows through peft's mixed-adapter batches, ``adapter_names``),
each row with its own place in one KV cache. Different checkpoints run one forward each.

Tokenizers are checked once: the experts must agree token for token on the shared id range; logit
slots beyond it (e.g. a model padded to 32016 for a 32000-token tokenizer) are dropped, which masks
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from polyalign.errors import ConfigError, ModelLoadError, TokenizerMismatchError
from polyalign.models import DEFAULT_MODEL, LoadedModel, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Expert:
    """One model good at one objective: a checkpoint, optionally a LoRA adapter and a system prompt."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    system_prompt: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.adapter:
            return Path(self.adapter).name
        if self.system_prompt:
            return self.system_prompt[:24]
        return Path(self.model).name


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None, chat: bool) -> str:
    """The text a row starts from: the chat template when there is one, else system prompt + prompt."""
    if chat and tokenizer.chat_template:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n\n{prompt}" if system_prompt else prompt


def shared_vocab_size(models: Sequence[LoadedModel]) -> int:
    """Size V of the id range all models share; raise if their tokenizers disagree on it."""
    sizes = [min(len(m.tokenizer), m.model.get_output_embeddings().weight.shape[0]) for m in models]
    vocab = min(sizes)
    first = models[0]
    first_tokens = first.tokenizer.convert_ids_to_tokens(list(range(vocab)))
    for other in models[1:]:
        tokens = other.tokenizer.convert_ids_to_tokens(list(range(vocab)))
        if tokens != first_tokens:
            i = next(i for i, (a, b) in enumerate(zip(first_tokens, tokens, strict=True)) if a != b)
            raise TokenizerMismatchError(
                f"tokenizers of {first.name!r} and {other.name!r} differ at id {i} ({first_tokens[i]!r} vs "
                f"{tokens[i]!r}): MOD needs experts that share a vocabulary; use models from one family"
            )
    return vocab


@dataclass
class _Group:
    """Roles that share one set of weights, run as one batched forward."""

    loaded: LoadedModel
    model: torch.nn.Module
    roles: list[int]
    adapters: list[str | None]
    systems: list[str | None]
    # per-generation state
    cache: object = None
    mask: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    batch: int = 0
    row_adapters: list[str] = field(default_factory=list)

    @property
    def uses_adapters(self) -> bool:
        return any(a is not None for a in self.adapters)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, vocab: int) -> torch.Tensor:
        kwargs = {"adapter_names": self.row_adapters} if self.uses_adapters else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=position_ids,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        self.cache = out.past_key_values
        logits = out.logits[:, -1, :vocab].float()
        return torch.log_softmax(logits, dim=-1).view(len(self.roles), self.batch, vocab)


class ExpertBank:
    """A reference (optional, role 0) and experts, with batched cached next-token log-probs."""

    def __init__(
        self,
        experts: Sequence[Expert],
        reference: Expert | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chat: bool = True,
    ) -> None:
        if not experts:
            raise ConfigError("MOD needs at least one expert")
        self.experts = list(experts)
        self.reference = reference
        self.roles: list[Expert] = ([reference] if reference is not None else []) + self.experts
        self.chat = chat
        self.groups = self._build_groups(device, dtype)
        self.vocab_size = shared_vocab_size([g.loaded for g in self.groups])
        self.tokenizer = self.groups[0].loaded.tokenizer
        self.device = self.groups[0].loaded.device
        self.eos_ids = _eos_ids(self.groups[0].loaded)

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def _build_groups(self, device, dtype) -> list[_Group]:
        by_model: dict[str, list[int]] = {}
        for r, role in enumerate(self.roles):
            by_model.setdefault(role.model, []).append(r)
        groups = []
        for spec, roles in by_model.items():
            adapters = [self.roles[r].adapter for r in roles]
            if any(adapters):
                # peft injects LoRA layers into the model it wraps: use a private copy, not the shared one.
                loaded = load_model(spec, device=device, dtype=dtype, cached=False)
                model, names = _attach_adapters(loaded, adapters)
            else:
                loaded = load_model(spec, device=device, dtype=dtype)
                model, names = loaded.model, [None] * len(roles)
            groups.append(_Group(loaded, model, roles, names, [self.roles[r].system_prompt for r in roles]))
        return groups

    @torch.inference_mode()
    def start(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prefill every row for ``prompts``; return next-token log-probs ``[R, B, V]``."""
        out = torch.empty(len(self.roles), len(prompts), self.vocab_size, device=self.device)
        for g in self.groups:
            tok = g.loaded.tokenizer
            texts = [format_prompt(tok, p, s, self.chat) for s in g.systems for p in prompts]
            templated = self.chat and bool(tok.chat_template)  # the template already holds BOS etc.
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
            g.mask = enc["attention_mask"].to(self.device)
            positions = (g.mask.cumsum(-1) - 1).clamp(min=0)
            g.positions = positions[:, -1] + 1
            g.batch = len(prompts)
            g.row_adapters = [a or BASE_ADAPTER for a in g.adapters for _ in prompts]
            g.cache = None
            out[g.roles] = g.forward(enc["input_ids"].to(self.device), positions, self.vocab_size)
        return out

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per prompt row ``[B]``; return next-token log-probs ``[R, B, V]``."""
        out = torch.empty(len(self.roles), tokens.shape[0], self.vocab_size, device=self.device)
        for g in self.groups:
            ids = tokens.repeat(len(g.roles)).unsqueeze(-1)
            g.mask = torch.cat([g.mask, g.mask.new_ones(g.mask.shape[0], 1)], dim=-1)
            out[g.roles] = g.forward(ids, g.positions.unsqueeze(-1), self.vocab_size)
            g.positions = g.positions + 1
        return out

    @torch.inference_mode()
    def select(self, index: torch.Tensor) -> None:
        """Keep (or repeat, for beams) prompt rows ``index`` in every cache: ``B -> len(index)``."""
        for g in self.groups:
            rows = torch.cat([k * g.batch + index for k in range(len(g.roles))]).to(self.device)
            g.cache.reorder_cache(rows)
            g.mask = g.mask[rows]
            g.positions = g.positions[rows]
            g.row_adapters = [g.row_adapters[i] for i in rows.tolist()]
            g.batch = len(index)


def _attach_adapters(loaded: LoadedModel, adapters: list[str | None]) -> tuple[torch.nn.Module, list[str | None]]:
    """Wrap a private base model with every distinct LoRA adapter, named a0, a1, ..."""
    from peft import PeftModel

    from polyalign.models import first_line

    names: dict[str, str] = {}
    model = None
    for path in dict.fromkeys(a for a in adapters if a):
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ModelLoadError(f"LoRA adapter not found: {path} (a directory with adapter_config.json)")
        if not any((folder / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
            raise ModelLoadError(f"LoRA adapter {path} has adapter_config.json but no weights: "
                                 "adapter_model.safetensors (or adapter_model.bin) is missing from it")
        names[path] = f"a{len(names)}"
        try:
            if model is None:
                model = PeftModel.from_pretrained(loaded.model, str(folder), adapter_name=names[path])
            else:
                model.load_adapter(str(folder), adapter_name=names[path])
        except Exception as exc:
            hint = "; was it trained on another base model?" if "size mismatch" in str(exc) else ""
            raise ModelLoadError(f"could not load LoRA adapter {path} onto {loaded.name!r}: "
                                 f"{first_line(exc)}{hint}") from exc
    model.eval()
    return model, [names[a] if a else None for a in adapters]


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids = set()
    for source in (loaded.tokenizer.eos_token_id, getattr(loaded.model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids
