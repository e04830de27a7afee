"""Roles (models, each with an optional LoRA adapter and system prompt) and their batched next-token log-probs:
the next-token source of every policy built on :mod:`polyalign.decode`.

An :class:`Expert` is one role. A :class:`ModelBank` holds the *weights* of a list of roles and runs them as
*one forward per distinct set of weights* at each step: roles that share a checkpoint stack their rows into one
batch (persona rows with different system prompts; LoRA rows through peft's mixed-adapter batches,
``adapter_names``), each row with its own place in one KV cache. Different checkpoints run one forward each.
Identical roles are run once. Everything that belongs to one generation (caches, masks, positions, the live
rows) lives in a :class:`BankState`, so any number of generations can share one bank.

Tokenizers are checked once: the experts must agree token for token on the shared id range; logit
slots beyond it (e.g. a model padded to 32016 for a 32000-token tokenizer) are dropped, which masks
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        from polyalign.interface import check_text

        if self.system_prompt is not None:
            if not isinstance(self.system_prompt, str):
                raise ConfigError(f"a system prompt must be text, got {type(self.system_prompt).__name__}")
            check_text(self.system_prompt, f"the system prompt of {self.name or self.model!r}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.adapter:
            return Path(self.adapter).name
        if self.system_prompt:
            return self.system_prompt[:24]
        return Path(self.model).name


PROMPT_SLOT = "\x1epolyalign-prompt\x1e"  # stands in for user text while the chat template is rendered


def format_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None, chat: bool) -> str:
    """The text a row starts from: the chat template when there is one, else system prompt + prompt."""
    if chat and tokenizer.chat_template:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n\n{prompt}" if system_prompt else prompt


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None,
                  chat: bool) -> list[int]:
    """Token ids of :func:`format_prompt`, with user text encoded so that it can never produce control tokens:
    ``<|im_end|>`` typed into a prompt stays plain text and cannot fake a turn. The template is rendered with a
    placeholder and only its own text may hold special tokens."""
    templated = chat and bool(tokenizer.chat_template)
    frame = format_prompt(tokenizer, PROMPT_SLOT, system_prompt, chat) if templated else PROMPT_SLOT
    pieces = frame.split(PROMPT_SLOT)
    if len(pieces) != 2:  # a template that alters or repeats the user message: no safe split
        specials = [t for t in tokenizer.all_special_tokens if t and t in prompt]
        if specials:
            raise ConfigError(f"the prompt contains the control token(s) {specials}; this chat template cannot keep "
                              "them as plain text, remove them")
        return tokenizer(format_prompt(tokenizer, prompt, system_prompt, chat), add_special_tokens=not templated
                         )["input_ids"]
    if not templated:  # all of it is user text; the tokenizer adds its own BOS/EOS framing
        text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
        return tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
    before, after = pieces
    user = tokenizer(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return (tokenizer(before, add_special_tokens=False)["input_ids"] + user
            + tokenizer(after, add_special_tokens=False)["input_ids"])


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


def context_length(model: torch.nn.Module) -> int | None:
    """Most positions the model was built for (``max_position_embeddings``), when its config says."""
    return getattr(model.config, "max_position_embeddings", None)


@dataclass
class _Group:
    """Roles that share one set of weights, run as one batched forward. Holds no per-generation state."""

    loaded: LoadedModel
    model: torch.nn.Module
    slots: list[int]
    adapters: list[str | None]
    systems: list[str | None]

    @property
    def uses_adapters(self) -> bool:
        return any(a is not None for a in self.adapters)


@dataclass
class _GroupState:
    """One generation's rows in one group: row ``k * batch + b`` is role ``k`` of prompt row ``b``."""

    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    batch: int
    row_adapters: list[str]
    coefficients: torch.Tensor | None = None
    """Per row, what a conditioned model (CLP) mixes its parameters by ``[roles * batch, K]``; None otherwise."""

    def rows(self, index: torch.Tensor, n_roles: int) -> torch.Tensor:
        return torch.cat([k * self.batch + index for k in range(n_roles)])


def _row_kwargs(group: _Group, adapters: list[str], coefficients: torch.Tensor | None) -> dict:
    """What a group's forward needs per row besides the tokens: peft adapter names, or CLP's coefficients."""
    kwargs: dict = {"adapter_names": adapters} if group.uses_adapters else {}
    if coefficients is not None:
        kwargs["coefficients"] = coefficients
    return kwargs


def _forward(group: _Group, state: _GroupState, input_ids: torch.Tensor, position_ids: torch.Tensor,
             vocab: int) -> torch.Tensor:
    kwargs = _row_kwargs(group, state.row_adapters, state.coefficients)
    out = group.model(input_ids=input_ids, attention_mask=state.mask, position_ids=position_ids,
                      past_key_values=state.cache, use_cache=True, logits_to_keep=1, **kwargs)
    state.cache = out.past_key_values
    logits = out.logits[:, -1, :vocab].float()
    return torch.log_softmax(logits, dim=-1).view(len(group.slots), state.batch, vocab)


class BankState:
    """The per-generation half of a :class:`ModelBank`: caches, masks and positions of the live rows."""

    def __init__(self, bank: ModelBank, groups: list[_GroupState], prompt_ids: list[list[int]]) -> None:
        self.bank = bank
        self.groups = groups
        self.prompt_ids = prompt_ids
        """Per live row, the prompt ids of the bank's last role (the policy's own prompt)."""

    @property
    def batch(self) -> int:
        return len(self.prompt_ids)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per live row ``[B]``; return next-token log-probs ``[U, B, V]``."""
        bank = self.bank
        out = torch.empty(bank.n_slots, tokens.shape[0], bank.vocab_size, device=bank.device)
        for g, st in zip(bank.groups, self.groups, strict=True):
            ids = tokens.repeat(len(g.slots)).unsqueeze(-1)
            st.mask = torch.cat([st.mask, st.mask.new_ones(st.mask.shape[0], 1)], dim=-1)
            out[g.slots] = _forward(g, st, ids, st.positions.unsqueeze(-1), bank.vocab_size)
            st.positions = st.positions + 1
        return out

    @torch.inference_mode()
    def select(self, index: torch.Tensor) -> None:
        """Keep (or repeat, for beams and samples) live rows ``index``: ``B -> len(index)``."""
        index = index.to(self.bank.device)
        for g, st in zip(self.bank.groups, self.groups, strict=True):
            rows = st.rows(index, len(g.slots))
            st.cache.reorder_cache(rows)
            st.mask = st.mask[rows]
            st.positions = st.positions[rows]
            st.row_adapters = [st.row_adapters[i] for i in rows.tolist()]
            if st.coefficients is not None:
                st.coefficients = st.coefficients[rows]
            st.batch = len(index)
        self.prompt_ids = [self.prompt_ids[i] for i in index.tolist()]

    @torch.inference_mode()
    def trim(self) -> None:
        """Cut the cache columns that are left padding in every live row (rows that joined late were padded to
        the batch's width; once the older rows leave, that width is waste that every later step would attend)."""
        for st in self.groups:
            lead = int((st.mask.shape[1] - st.mask.sum(-1)).min())
            layers = st.cache.layers
            if lead <= 0 or any(type(x).__name__ != "DynamicLayer" or x.is_sliding for x in layers):
                continue
            for layer in layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
            st.mask = st.mask[:, lead:]

    @torch.inference_mode()
    def extend(self, other: BankState) -> None:
        """Append ``other``'s rows (e.g. a new request prefilled by :meth:`ModelBank.start`) after this state's:
        rows join a running generation at a step boundary. The shorter caches are padded on the left, masked."""
        for g, st, new in zip(self.bank.groups, self.groups, other.groups, strict=True):
            roles, width = len(g.slots), max(st.mask.shape[1], new.mask.shape[1])
            for mine, theirs in zip(st.cache.layers, new.cache.layers, strict=True):
                if type(mine).__name__ != "DynamicLayer" or mine.is_sliding:
                    raise ConfigError(f"rows cannot join a running generation of {g.loaded.name!r}: its cache "
                                      f"({type(mine).__name__}) has no room for left padding")
                mine.keys = _join_rows(mine.keys, theirs.keys, roles, width, dim=2)
                mine.values = _join_rows(mine.values, theirs.values, roles, width, dim=2)
            st.mask = _join_rows(st.mask, new.mask, roles, width, dim=1)
            st.positions = _join_rows(st.positions, new.positions, roles)
            adapters = [st.row_adapters[k * st.batch:(k + 1) * st.batch] + new.row_adapters[k * new.batch:
                                                                                            (k + 1) * new.batch]
                        for k in range(roles)]
            st.row_adapters = [a for per_role in adapters for a in per_role]
            if st.coefficients is not None:
                st.coefficients = _join_rows(st.coefficients, new.coefficients, roles)
            st.batch += new.batch
        self.prompt_ids += other.prompt_ids


def _join_rows(a: torch.Tensor, b: torch.Tensor, roles: int, width: int | None = None, dim: int = 1) -> torch.Tensor:
    """Rows ``[roles * Ba, ...]`` and ``[roles * Bb, ...]`` as ``[roles * (Ba + Bb), ...]``, role-major, with the
    time dimension ``dim`` zero-padded on the left to ``width``."""
    if width is not None:
        a, b = (torch.nn.functional.pad(x.movedim(dim, -1), (width - x.shape[dim], 0)).movedim(-1, dim)
                for x in (a, b))
    joined = torch.cat([a.reshape(roles, -1, *a.shape[1:]), b.reshape(roles, -1, *b.shape[1:])], dim=1)
    return joined.reshape(-1, *a.shape[1:])


class ModelBank:
    """The weights of a list of roles (e.g. a reference and M experts), with batched cached next-token
    log-probs. Row ``slot(r)`` of what :meth:`start` and :meth:`BankState.step` return belongs to role ``r``."""

    def __init__(
        self,
        roles: Sequence[Expert],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chat: bool = True,
    ) -> None:
        if not roles:
            raise ConfigError("a model bank needs at least one model")
        self.roles = list(roles)
        unique = list(dict.fromkeys((r.model, r.adapter, r.system_prompt) for r in self.roles))
        self._slot = [unique.index((r.model, r.adapter, r.system_prompt)) for r in self.roles]
        self.n_slots = len(unique)
        self.chat = chat
        self.groups = self._build_groups(unique, device, dtype)
        self._finish()

    def _finish(self) -> None:
        """What follows from the groups: the shared vocabulary, tokenizer, device, EOS ids and context."""
        self.vocab_size = shared_vocab_size([g.loaded for g in self.groups])
        self.tokenizer = self.groups[0].loaded.tokenizer
        self.device = self.groups[0].loaded.device
        self.eos_ids = _eos_ids(self.groups[0].loaded)
        self.max_positions = min((n for g in self.groups if (n := context_length(g.model))), default=None)

    def slot(self, role: int) -> int:
        """Where role ``role`` (its index in ``roles``) sits in the log-probs this bank returns."""
        return self._slot[role]

    def _build_groups(self, unique: list[tuple], device, dtype) -> list[_Group]:
        by_model: dict[str, list[int]] = {}
        for s, (model, _, _) in enumerate(unique):
            by_model.setdefault(model, []).append(s)
        groups = []
        for spec, slots in by_model.items():
            adapters = [unique[s][1] for s in slots]
            if any(adapters):
                # peft injects LoRA layers into the model it wraps: use a private copy, not the shared one.
                loaded = load_model(spec, device=device, dtype=dtype, cached=False)
                model, names = _attach_adapters(loaded, adapters)
            else:
                loaded = load_model(spec, device=device, dtype=dtype)
                model, names = loaded.model, [None] * len(slots)
            groups.append(_Group(loaded, model, slots, names, [unique[s][2] for s in slots]))
        return groups

    def encode(self, prompts: Sequence[str], max_new_tokens: int = 0, conditions: torch.Tensor | None = None
               ) -> list[list[list[int]]]:
        """Prompt ids per group, role and prompt; refuses prompts that leave fewer than ``max_new_tokens``
        positions of the model's context. ``conditions``: the head's weights per prompt (a bank whose prompts
        depend on them overrides this)."""
        encoded = []
        for g in self.groups:
            tok = g.loaded.tokenizer
            encoded.append([[encode_prompt(tok, p, s, self.chat) for p in prompts] for s in g.systems])
        self.check_context(encoded, len(prompts), max_new_tokens)
        return encoded

    def check_context(self, encoded: list[list[list[list[int]]]], n: int, max_new_tokens: int) -> None:
        if self.max_positions is None:
            return
        for i in range(n):
            longest = max(len(ids[i]) for per_group in encoded for ids in per_group)
            if longest + max_new_tokens > self.max_positions:
                raise ConfigError(
                    f"prompt {i} is {longest} tokens long; with max_new_tokens={max_new_tokens} it needs "
                    f"{longest + max_new_tokens} positions but the model has {self.max_positions}: shorten the "
                    "prompt or lower max_new_tokens")

    def row_coefficients(self, group: _Group, conditions: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Per-row coefficients ``[roles * batch, K]`` of a conditioned group, from the head's weights
        ``conditions [batch, K']``; None for plain models (the bank that holds a CLP model overrides this)."""
        return None

    @torch.inference_mode()
    def start(self, prompts: Sequence[str], max_new_tokens: int = 0, conditions: torch.Tensor | None = None
              ) -> tuple[BankState, torch.Tensor]:
        """Prefill every row for ``prompts``; return the new generation's state and log-probs ``[U, B, V]``.
        ``conditions`` (the head's weights per prompt) reach models conditioned on them (CLP)."""
        encoded = self.encode(prompts, max_new_tokens, conditions)
        out = torch.empty(self.n_slots, len(prompts), self.vocab_size, device=self.device)
        states = []
        for g, per_role in zip(self.groups, encoded, strict=True):
            rows = [ids for per_prompt in per_role for ids in per_prompt]
            ids, mask = _left_pad(rows, g.loaded.tokenizer.pad_token_id, self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            state = _GroupState(None, mask, positions[:, -1] + 1, len(prompts),
                                [a or BASE_ADAPTER for a in g.adapters for _ in prompts],
                                self.row_coefficients(g, conditions, len(prompts)))
            out[g.slots] = _forward(g, state, ids, positions, self.vocab_size)
            states.append(state)
        last = self._slot[-1]
        group = next(k for k, g in enumerate(self.groups) if last in g.slots)
        return BankState(self, states, encoded[group][self.groups[group].slots.index(last)]), out

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], responses: Sequence[Sequence[int]],
              conditions: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced log-probs ``[U, B, T, V]`` of each position of ``responses`` (padded to the longest
        response T), from one cache-free forward per group."""
        encoded = self.encode(prompts, max(len(r) for r in responses), conditions)
        longest = max(len(r) for r in responses)
        out = torch.zeros(self.n_slots, len(prompts), longest, self.vocab_size, device=self.device)
        for g, per_role in zip(self.groups, encoded, strict=True):
            rows = [ids + list(r) for per_prompt in per_role for ids, r in zip(per_prompt, responses, strict=True)]
            starts = [len(ids) for per_prompt in per_role for ids in per_prompt]
            ids, mask = _left_pad(rows, g.loaded.tokenizer.pad_token_id, self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = _row_kwargs(g, [a or BASE_ADAPTER for a in g.adapters for _ in prompts],
                                 self.row_coefficients(g, conditions, len(prompts)))
            logits = g.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs).logits
            logprobs = torch.log_softmax(logits[..., : self.vocab_size].float(), dim=-1)
            width = ids.shape[1]
            for row, (start, full) in enumerate(zip(starts, rows, strict=True)):
                n = len(full) - start  # positions start-1 .. len-2 predict the response tokens
                first = width - len(full) + start - 1
                role, b = divmod(row, len(prompts))
                out[g.slots[role], b, :n] = logprobs[row, first:first + n]
        return out


ExpertBank = ModelBank  # the name MOD's first release used


def _left_pad(rows: list[list[int]], pad_id: int | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    pad = 0 if pad_id is None else pad_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


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
