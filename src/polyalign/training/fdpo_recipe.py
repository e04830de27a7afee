"""Training an f-DPO expert (Wang et al. 2023) on preference pairs, on the run conventions of
:mod:`polyalign.training.run` (run folder, config.json, metrics.jsonl, atomic ``checkpoints/step-N``, bit-exact
resume, accelerate, progress) that CLP training uses. The loop::

    pairs = preferences(config)                                   # a file / dataset, or generated from objectives
    for step in range(start, steps):
        batch      = pair_batch(pairs, step)                      # seeded epochs, a function of the step
        logps      = learner(batch)                               # log pi(y_w|x), log pi(y_l|x), one forward
        ref_logps  = learner.reference_logps(batch)               # the adapter off (LoRA) or a frozen copy
        loss       = fdpo_loss(logps, ref_logps, divergence, beta)   # f-DPO Eq. 12 (reverse KL: DPO Eq. 7)
        run.step(loss)                                            # backward, clip, AdamW, schedule, metrics,
                                                                  # atomic checkpoint

We write the loop on our training package rather than on TRL's ``DPOTrainer``: TRL is not a dependency of
polyalign, it has no Jeffrey divergence, and one set of run conventions (resume, checkpoints that
``polyalign.load`` and MOD read) serves every trained method. ``tests/test_fdpo.py`` checks TRL's losses against
ours on fixed log-probs; ``benchmarks/fdpo.py`` times the two.

The result, ``RUN/expert/``, is a peft adapter (or a whole model) with ``policy.json``: divergence, beta, base
model and its fingerprint, the objective; MOD refuses it under another divergence unless told otherwise.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polyalign import checkpoint as ckpt
from polyalign.errors import ConfigError, ModelLoadError
from polyalign.preferences import PreferencePair, PreferenceStats
from polyalign.training.fdpo import fdpo_loss, pair_stats
from polyalign.training.fdpo_config import ExpertConfig
from polyalign.training.learner import Batch, make_batch
from polyalign.training.run import METRICS, Run, check_run_folder, mix_seed

KIND = "fdpo_expert"
PREFERENCES = "preferences.jsonl"
EXPERT = "expert"


# -- data -----------------------------------------------------------------------------------------------------


@dataclass
class Tokenized:
    """Pairs as token ids: the prompt as the expert reads it when MOD decodes (chat template, no system prompt),
    each response followed by EOS and cut to fit ``max_length``."""

    prompts: list[list[int]]
    chosen: list[list[int]]
    rejected: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompts)


def prompt_ids(tokenizer, pair: PreferencePair, chat: bool) -> list[int]:
    """The prompt's token ids: text through :func:`polyalign.experts.encode_prompt` (as MOD decodes), messages
    through the chat template."""
    from polyalign.experts import encode_prompt

    if isinstance(pair.prompt, str):
        return encode_prompt(tokenizer, pair.prompt, None, chat)
    messages = pair.messages or []
    if chat and tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer("\n\n".join(m.get("content", "") for m in messages), add_special_tokens=True)["input_ids"]


def tokenize_pairs(tokenizer, pairs: list[PreferencePair], max_length: int, chat: bool = True) -> Tokenized:
    """Token ids of every pair (see :class:`Tokenized`); a prompt that leaves no room for a response is refused."""
    eos = tokenizer.eos_token_id
    tail = [eos] if isinstance(eos, int) else []
    out = Tokenized([], [], [])
    for i, pair in enumerate(pairs):
        p = prompt_ids(tokenizer, pair, chat)
        room = max_length - len(p)
        if room < 1:
            raise ConfigError(f"preference pair {i}: its prompt is {len(p)} tokens, leaving no room for a response "
                              f"within max_length={max_length}; raise max_length or shorten the prompt")
        out.prompts.append(p)
        for ids, text in ((out.chosen, pair.chosen), (out.rejected, pair.rejected)):
            ids.append((tokenizer(text, add_special_tokens=False)["input_ids"] + tail)[:room])
    return out


def pair_indices(n: int, config: ExpertConfig, step: int, micro: int, rank: int, world: int) -> list[int]:
    """The pairs of one micro-batch: epochs of seeded permutations consumed in order (the same rule as CLP's
    prompts, :func:`polyalign.training.recipe.prompt_batch`), so a resumed run reads what the killed one would."""
    from polyalign.training.recipe import prompt_batch

    return prompt_batch(list(range(n)), config, step, micro, rank, world)  # type: ignore[arg-type]


def pair_batch(data: Tokenized, indices: list[int], pad_id: int, device: torch.device) -> Batch:
    """One :class:`~polyalign.training.learner.Batch` of ``2B`` rows: the chosen responses, then the rejected."""
    prompts = [data.prompts[i] for i in indices]
    responses = [data.chosen[i] for i in indices] + [data.rejected[i] for i in indices]
    return make_batch(prompts + prompts, responses, pad_id, device)


# -- the expert -----------------------------------------------------------------------------------------------


class ExpertModel:
    """The model being trained (a peft LoRA model, or a whole private copy), its reference and how it is written
    to and read from a checkpoint directory (the ``policy`` of :class:`~polyalign.training.run.Run`)."""

    def __init__(self, config: ExpertConfig, device: torch.device | str | None = None) -> None:
        from polyalign.models import load_model

        p = config.policy
        self.config = config
        self.reference = load_model(p.model, device=p.device or device, dtype=p.dtype)  # shared, frozen
        self.base_fingerprint = ckpt.fingerprint(self.reference.model)
        torch.manual_seed(mix_seed(config.seed, 7))
        loaded = load_model(p.model, device=p.device or device, dtype=p.dtype, cached=False)
        self.tokenizer = loaded.tokenizer
        self.vocab_size = min(len(loaded.tokenizer), loaded.model.get_output_embeddings().weight.shape[0])
        if p.kind == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=p.rank, lora_alpha=p.lora_alpha, target_modules=list(p.target_modules),
                              lora_dropout=0.0, bias="none", base_model_name_or_path=p.model)
            try:
                self.model = get_peft_model(loaded.model, lora)
            except ValueError as exc:
                raise ConfigError(f"policy.target_modules {p.target_modules}: {str(exc).splitlines()[0]}") from None
        else:
            self.model = loaded.model
            for param in self.model.parameters():
                param.requires_grad_(True)
        self.model.train()
        self.pairs_meta: dict[str, Any] = {}

    def meta(self) -> dict[str, Any]:
        c = self.config
        return {"kind": KIND, "format": c.policy.kind, "objective": c.expert_name, "objectives": [c.expert_name],
                "divergence": c.divergence, "beta": c.beta, "base_model": c.policy.model,
                "base_fingerprint": self.base_fingerprint, "preferences": self.pairs_meta}

    def write_to(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """The adapter (peft layout) or the whole model (transformers layout, safetensors), and ``policy.json``."""
        model = _unwrap(self.model)
        if self.config.policy.kind == "lora":
            model.save_pretrained(str(folder), safe_serialization=True)
            (folder / "README.md").unlink(missing_ok=True)
        else:
            model.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))
        ckpt.write_meta(folder, self.meta() | (extra or {}))

    def restore(self, folder: Path, meta: dict[str, Any], model: str | None = None) -> None:
        """Load a checkpoint's weights into the model (``--resume``), refusing one trained on another base."""
        where = repr(str(folder))
        if meta.get("kind") != KIND:
            raise ModelLoadError(f"checkpoint {where} holds a {meta.get('kind')!r} policy, not an f-DPO expert")
        ckpt.check_fingerprint(meta.get("base_fingerprint", {}), self.reference.model, where, self.config.policy.model)
        target = _unwrap(self.model)
        if self.config.policy.kind == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(target, ckpt.load_tensors(folder / "adapter_model.safetensors",
                                                                         "adapter"))
            unexpected = list(getattr(result, "unexpected_keys", []) or [])
        else:
            state = ckpt.load_tensors(folder / "model.safetensors", "model")
            result = target.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if getattr(target.config, "tie_word_embeddings", False) else set()
            unexpected = list(result.unexpected_keys) + [k for k in result.missing_keys if k not in tied]
        if unexpected:
            raise ModelLoadError(f"checkpoint {where} does not fit this run's model ({unexpected[:3]} ...)")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def sequence_logprobs(model: nn.Module, batch: Batch, vocab_size: int) -> Tensor:
    """``log pi(y|x)`` of each row, summed over the response tokens ``[N]`` (float32 log-softmax over the
    vocabulary; only the response positions' logits are computed)."""
    length = batch.response_ids.shape[1]
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False, logits_to_keep=length + 1)
    logits = out.logits[:, :-1, :vocab_size].float()
    tokens = logits.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return (tokens * batch.response_mask).sum(-1)


class PairLearner(nn.Module):
    """What a step differentiates: the expert's sequence log-probs. f-DPO has no value model; ``value`` is an
    empty module so that :class:`~polyalign.training.run.Run` writes and reads its usual checkpoint layout."""

    def __init__(self, expert: ExpertModel) -> None:
        super().__init__()
        self.model = expert.model
        self.value = nn.Module()
        self.vocab_size = expert.vocab_size
        self.pad_id = _pad_id(expert.tokenizer)
        self._reference = [expert.reference.model]  # a list: not a submodule (never trained, never synced)
        self.lora = expert.config.policy.kind == "lora"

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def forward(self, batch: Batch) -> Tensor:
        return sequence_logprobs(self.model, batch, self.vocab_size)

    @torch.no_grad()
    def reference_logprobs(self, batch: Batch) -> Tensor:
        """``log pi_ref(y|x)``: the base with the adapter switched off (LoRA), else the frozen reference."""
        if self.lora:
            with self.model.disable_adapter():
                return sequence_logprobs(self.model, batch, self.vocab_size)
        return sequence_logprobs(self._reference[0], batch, self.vocab_size)


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(candidate, int):
            return candidate
    return 0


# -- preferences for a run ------------------------------------------------------------------------------------


def generated_run_preferences(config: ExpertConfig, expert: ExpertModel, resume: bool
                              ) -> tuple[list[PreferencePair], dict]:
    """Pairs generated from ``config.generate`` with the reference, once: a resumed run reads the
    ``preferences.jsonl`` the first one wrote (or regenerates the same pairs: they are seeded)."""
    from polyalign.files import read_json
    from polyalign.preferences import load_preferences

    saved, stats_file = config.run_dir / PREFERENCES, config.run_dir / "preferences.json"
    g = config.generate
    assert g is not None
    if resume and saved.is_file() and stats_file.is_file():
        return load_preferences(saved), read_json(stats_file, "preference stats")
    pairs, _, stats = generated_preferences(config, expert)
    return pairs, {"source": "generated", "objectives": g.objectives, "weights": g.weights, "k": g.k,
                   "seed": g.seed, **_stats(stats)}


def generated_preferences(config: ExpertConfig, expert: ExpertModel
                          ) -> tuple[list[PreferencePair], Tensor, PreferenceStats]:
    from polyalign.experts import Expert
    from polyalign.objectives import build
    from polyalign.policies.plain import Plain
    from polyalign.preferences import generate_preferences
    from polyalign.prompts import load_prompts

    g = config.generate
    assert g is not None
    objectives = build(g.objectives)
    if isinstance(g.prompts, str):
        prompts = load_prompts(g.prompts, limit=g.prompt_limit)
    else:
        from polyalign.interface import check_prompts

        prompts = check_prompts(g.prompts)[: g.prompt_limit]
    p = config.policy
    reference = Plain(Expert(p.model, name="reference"), device=expert.reference.device, dtype=p.dtype, chat=p.chat)
    return generate_preferences(reference, prompts, objectives, g.weights, k=g.k, seed=g.seed, generation=g.generation)


def _stats(stats: PreferenceStats) -> dict[str, int]:
    return {"prompts": stats.prompts, "pairs": stats.pairs, "ties": stats.ties, "identical": stats.identical}


# -- the run --------------------------------------------------------------------------------------------------


@dataclass
class ExpertParts:
    """What :class:`~polyalign.training.run.Run` needs from a run (the fields of its ``RunParts``)."""

    policy: ExpertModel
    learner: PairLearner
    optimizer: torch.optim.Optimizer
    scheduler: Any
    objectives: Any = None
    prompts: Any = None


class ExpertRun(Run):
    """:class:`~polyalign.training.run.Run` with f-DPO's metrics and one parameter group."""

    def optimizer_step(self) -> float:  # type: ignore[override]
        """Clip, step, schedule; returns the gradient norm before clipping."""
        norm = self._clip(self.parts.optimizer.param_groups[0]["params"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def record_pairs(self, step: int, metrics: list[dict[str, float]], pairs: int, seconds: float,
                     grad_norm: float) -> None:
        """A finished step's metrics (averaged over micro-batches and processes), and a checkpoint when due."""
        keys = list(metrics[0])
        local = torch.tensor([[sum(m[k] for m in metrics) / len(metrics) for k in keys]], dtype=torch.float64)
        summary = self.gather(local.to(self.accelerator.device)).mean(0).tolist()
        line: dict[str, Any] = {"step": step + 1, **dict(zip(keys, summary, strict=True)), "grad_norm": grad_norm,
                                "lr": self.scheduler.get_last_lr()[0],
                                "pairs_per_s": pairs * self.accelerator.num_processes / max(seconds, 1e-9),
                                "seconds/step": seconds}
        self.status = f"loss {line['loss']:.3f} acc {line['accuracy']:.2f} margin {line['margin']:+.3f}"
        if self.main:
            with open(self.folder / METRICS, "a") as handle:
                handle.write(json.dumps(line) + "\n")
        if self.config.log_with:
            self.accelerator.log({k: v for k, v in line.items() if isinstance(v, int | float)}, step=step + 1)
        if (step + 1) % self.config.checkpoint_every == 0 or step + 1 == self.config.steps:
            self.save(step + 1)


def build_expert_run(config: ExpertConfig, accelerator, resume: bool) -> tuple[ExpertParts, Tokenized]:
    from transformers import get_scheduler

    if config.preferences is not None:  # a bad file fails before any model loads
        from polyalign.preferences import load_preferences

        pairs = load_preferences(config.preferences, limit=config.preference_limit)
        meta: dict[str, Any] = {"source": config.preferences, "pairs": len(pairs)}
        expert = ExpertModel(config, accelerator.device)
    else:
        expert = ExpertModel(config, accelerator.device)
        pairs, meta = generated_run_preferences(config, expert, resume)
    expert.pairs_meta = meta
    data = tokenize_pairs(expert.tokenizer, pairs, config.max_length, config.policy.chat)
    learner = PairLearner(expert)
    o = config.optim
    optimizer = torch.optim.AdamW([{"params": learner.policy_parameters(), "lr": o.lr}], betas=o.betas,
                                  weight_decay=o.weight_decay)
    scheduler = get_scheduler(o.schedule, optimizer, num_warmup_steps=o.warmup_steps,
                              num_training_steps=config.steps)
    parts = ExpertParts(expert, learner, optimizer, scheduler)
    parts.prompts = pairs
    return parts, data


def train_expert(config: ExpertConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or ``resume``) the f-DPO training described by ``config``; returns the expert's directory
    (``RUN/expert``: a peft adapter or a model, with ``policy.json`` naming divergence and beta)."""
    from accelerate import Accelerator

    check_run_folder(config, resume)  # type: ignore[arg-type]
    accelerator = Accelerator(log_with=config.log_with or None, project_dir=str(config.run_dir))
    parts, data = build_expert_run(config, accelerator, resume)
    run = ExpertRun(config, accelerator, parts, resume=resume, progress=progress)  # type: ignore[arg-type]
    if run.main:
        from polyalign.preferences import write_preferences

        write_preferences(config.run_dir / PREFERENCES, parts.prompts)
        (config.run_dir / "preferences.json").write_text(json.dumps(parts.policy.pairs_meta, indent=2) + "\n")
    world, rank = accelerator.num_processes, accelerator.process_index
    accumulation = config.optim.accumulation_steps
    for step in run.steps():
        t0 = time.perf_counter()
        metrics, pairs = [], 0
        for micro in range(accumulation):
            indices = pair_indices(len(data), config, step, micro, rank, world)
            batch = pair_batch(data, indices, parts.learner.pad_id, accelerator.device)
            ref = parts.learner.reference_logprobs(batch)
            sync = accelerator.no_sync(run.model) if micro < accumulation - 1 else _null()
            with sync:
                logps = run.model(batch)
                n = len(indices)
                losses = fdpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], config.divergence, config.beta)
                loss = losses.mean()
                accelerator.backward(loss / accumulation)
            stats = pair_stats(losses, logps[:n], logps[n:], ref[:n], ref[n:], config.divergence, config.beta)
            metrics.append(vars(stats) | {"logps/chosen": float(logps[:n].detach().mean()),
                                          "logps/rejected": float(logps[n:].detach().mean())})
            pairs += n
        grad_norm = run.optimizer_step()
        run.record_pairs(step, metrics, pairs, time.perf_counter() - t0, grad_norm)
    latest = run.finish()
    target = config.run_dir / EXPERT
    if run.main:
        export_expert(latest, target)
    accelerator.wait_for_everyone()
    return target


def _null():
    from contextlib import nullcontext

    return nullcontext()


def export_expert(checkpoint: Path, target: Path) -> Path:
    """The expert of a checkpoint without its trainer state: what MOD and ``polyalign.load`` read."""
    skip = {"trainer", "value.safetensors", ckpt.COMPLETE}
    with ckpt.atomic_dir(target) as folder:
        for item in checkpoint.iterdir():
            if item.name in skip:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, folder / item.name)
    return target


# -- loading --------------------------------------------------------------------------------------------------


def load_expert(path: Path, meta: dict[str, Any], *, model: str | None = None, device=None, dtype=None,
                chat: bool = True):
    """``polyalign.load`` of an f-DPO expert: a :class:`~polyalign.policies.Plain` policy (the expert against
    its base as the reference), named after its objective."""
    from polyalign.experts import Expert
    from polyalign.policies.plain import Plain

    base = model or meta["base_model"]
    name = meta.get("objective") or "expert"
    expert = Expert(base, adapter=str(path), name=name) if meta.get("format") == "lora" else Expert(str(path),
                                                                                                    name=name)
    return Plain(expert, Expert(base, name="reference"), [name], device=device, dtype=dtype, chat=chat)


ckpt.register_loader(KIND, load_expert)
