"""Run conventions shared by every trained method: the run folder, metrics, checkpoints and resume.

::

    RUN/config.json                  the validated config (a resumed run must match it)
    RUN/metrics.jsonl                one line per step: rewards per objective, KL, loss, value error, entropy,
                                     tokens/s, seconds in generate / score / update, lr, grad norm
    RUN/checkpoints/step-000050/     policy.json + policy.safetensors (polyalign.load reads it), value.safetensors,
                                     trainer/ (optimizer.pt, scheduler.pt, read with torch.load(weights_only=True);
                                     state.json with the step and every RNG), COMPLETE (written last)
    RUN/sync.json                    per-process digests of the trained weights at the end (several processes)

A checkpoint is written atomically (:func:`polyalign.checkpoint.atomic_dir`); ``resume`` continues from the
newest complete one with optimizer, scheduler, RNGs and the data position restored, so that on CPU a resumed
run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyalign import checkpoint as ckpt
from polyalign.errors import ConfigError, ModelLoadError
from polyalign.training.config import TrainConfig

METRICS = "metrics.jsonl"
CONFIG = "config.json"


@dataclass
class RunParts:
    """Everything a run builds from its config, in the same order on every process."""

    policy: Any
    learner: Any
    objectives: Any
    prompts: list[str]
    optimizer: torch.optim.Optimizer
    scheduler: Any


def build_objectives(config: TrainConfig):
    from polyalign.objectives import build
    from polyalign.objectives.normalize import Normalizer

    objectives = build(config.objectives)
    if config.normalizer is not None:
        objectives = Normalizer.load(config.normalizer).apply(objectives)
    return objectives


def build_run(config: TrainConfig, accelerator) -> RunParts:
    """Objectives, prompts, the policy at the reference, its learner, optimizer and schedule."""
    from transformers import get_scheduler

    from polyalign.prompts import load_prompts
    from polyalign.training.learner import Learner

    objectives = build_objectives(config)  # cheap checks before the model loads
    prompts = load_prompts(config.prompts, limit=config.prompt_limit)
    p = config.policy
    torch.manual_seed(mix_seed(config.seed, 7))
    cls, options = policy_class(config)
    policy = cls.create(objectives.names, p.model, p.selector, p.f_mix, p.alpha_min, rank=p.rank,
                        lora_alpha=p.lora_alpha, seed=mix_seed(config.seed, 3), device=p.device or accelerator.device,
                        dtype=p.dtype, chat=p.chat, prompt_conditioning=p.prompt_conditioning, **options)
    learner = Learner(policy.conditioned, policy.bank.vocab_size, _pad_id(policy.bank.tokenizer),
                      objectives=len(policy.objectives))
    o = config.optim
    optimizer = torch.optim.AdamW([
        {"params": learner.policy_parameters(), "lr": o.lr},
        {"params": list(learner.value.parameters()), "lr": o.value_lr},
    ], betas=o.betas, weight_decay=o.weight_decay)
    scheduler = get_scheduler(o.schedule, optimizer, num_warmup_steps=o.warmup_steps,
                              num_training_steps=config.steps)
    return RunParts(policy, learner, objectives, prompts, optimizer, scheduler)


def policy_class(config: TrainConfig) -> tuple[type, dict[str, Any]]:
    """The policy a run trains and its class options: how (w, alpha) reach the model is the policy's business
    (Eq. 3 mixing, the prompt, or a fixed weighting), never the recipe's."""
    from polyalign.policies.clp import CLP
    from polyalign.policies.morlhf import MORLHF
    from polyalign.policies.prompted import Prompted

    kind = config.policy.kind
    if kind == "morlhf":
        return MORLHF, {"points": [(config.sampler.weights, config.sampler.alpha)]}
    if kind == "experts":
        raise ConfigError("an experts run is one morlhf run per objective: train it with polyalign.training.train")
    return {"clp": CLP, "prompted": Prompted}[kind], {}


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, independent for every tuple (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if isinstance(candidate, int):
            return candidate
    return 0


class Run:
    """The run folder and the optimizer loop around the recipe's steps."""

    def __init__(self, config: TrainConfig, accelerator, parts: RunParts, *, resume: bool, progress: bool) -> None:
        self.config, self.accelerator, self.parts = config, accelerator, parts
        self.folder = config.run_dir
        self.main = accelerator.is_main_process
        self.model, self.optimizer = accelerator.prepare(parts.learner, parts.optimizer)
        self.scheduler = parts.scheduler  # stepped once per optimizer step by us, whatever the process count
        self.start = self._open(resume)
        self.progress = progress and self.main
        if config.log_with:
            accelerator.init_trackers(self.folder.name, config=config.model_dump(mode="json"))

    # -- the folder --------------------------------------------------------------------------------------------

    def _open(self, resume: bool) -> int:
        """Restore the newest checkpoint, or start the folder (checked by :func:`check_run_folder` before any
        model loaded, on every process before the main one writes)."""
        if resume:
            latest = ckpt.latest_checkpoint(self.folder)
            if latest is not None:
                return self._restore(latest)
            if self.main:  # killed before its first checkpoint: its lines are redone from step 1
                _truncate_metrics(self.folder / METRICS, 0)
            self.accelerator.wait_for_everyone()
            return 0
        self.accelerator.wait_for_everyone()
        if self.main:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_run_config(self.config)
            (self.folder / METRICS).write_text("")
        self.accelerator.wait_for_everyone()
        return 0

    def steps(self) -> Iterator[int]:
        """The remaining step numbers, with a progress bar on the main process."""
        if not self.progress:
            yield from range(self.start, self.config.steps)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[status]}"))
        with Progress(*columns, transient=False, console=_stderr_console()) as bar:
            task = bar.add_task("train", total=self.config.steps, completed=self.start, status="")
            for step in range(self.start, self.config.steps):
                yield step
                bar.update(task, advance=1, status=getattr(self, "status", ""))

    # -- one optimizer step ------------------------------------------------------------------------------------

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every process's values, concatenated (for advantage statistics over the whole batch)."""
        return self.accelerator.gather(values.contiguous())

    def optimizer_step(self) -> tuple[float, float]:
        """Clip the policy's and the value model's gradients each on its own (a young value model's large
        gradients must not shrink the policy's), step, schedule; returns both norms before clipping."""
        norms = [self._clip(group["params"]) for group in self.parts.optimizer.param_groups]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norms[0], norms[1]

    def _clip(self, params: list[torch.Tensor]) -> float:
        max_norm = self.config.optim.max_grad_norm
        if max_norm is not None:
            return float(self.accelerator.clip_grad_norm_(params, max_norm))
        grads = [p.grad.norm() for p in params if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def record(self, step: int, weights: torch.Tensor, alpha: float, records: list, timer: dict[str, float],
               grad_norms: tuple[float, float]) -> None:
        """Metrics of a finished step (averaged over micro-batches and processes), and a checkpoint when due."""
        rewards = torch.cat([r.rewards for r, _ in records]).double()
        kl = torch.cat([r.kl for r, _ in records])
        reward = torch.cat([r.reward for r, _ in records])
        tokens = sum(len(g.token_ids) for r, _ in records for g in r.generations)
        local = torch.cat([rewards.mean(0), kl.mean().reshape(1), reward.mean().reshape(1),
                           torch.tensor([float(np.mean([m[k] for _, m in records])) for k in records[0][1]],
                                        dtype=torch.float64)]).to(self.accelerator.device)
        summary = self.gather(local[None]).mean(0).tolist()
        m = rewards.shape[1]
        names = self.parts.objectives.names
        line: dict[str, Any] = {"step": step + 1, "weights": [round(x, 6) for x in weights.tolist()],
                                "alpha": alpha}
        line |= {f"reward/{n}": summary[i] for i, n in enumerate(names)}
        line |= {"kl": summary[m], "reward": summary[m + 1]}
        line |= dict(zip(records[0][1], summary[m + 2:], strict=True))
        seconds = sum(timer.values())
        line |= {"grad_norm": grad_norms[0], "value_grad_norm": grad_norms[1], "lr": self.scheduler.get_last_lr()[0],
                 "tokens_per_s": tokens / max(timer["generate"], 1e-9),
                 **{f"seconds/{k}": v for k, v in timer.items()}, "seconds/step": seconds}
        self.status = f"reward {line['reward']:+.3f} kl {line['kl']:.2f}"
        if self.main:
            with open(self.folder / METRICS, "a") as handle:
                handle.write(json.dumps(line) + "\n")
        if self.config.log_with:
            self.accelerator.log({k: v for k, v in line.items() if isinstance(v, (int, float))}, step=step + 1)
        if (step + 1) % self.config.checkpoint_every == 0 or step + 1 == self.config.steps:
            self.save(step + 1)

    # -- checkpoints -------------------------------------------------------------------------------------------

    def save(self, step: int) -> Path:
        target = self.folder / ckpt.CHECKPOINTS / f"step-{step:06d}"
        self.accelerator.wait_for_everyone()
        if self.main:
            with ckpt.atomic_dir(target) as folder:
                self.parts.policy.write_to(folder, {"run": {"step": step, "config": CONFIG}})
                ckpt.save_tensors(folder / "value.safetensors", self.parts.learner.value.state_dict())
                trainer = folder / "trainer"
                trainer.mkdir()
                torch.save(self.optimizer.state_dict(), trainer / "optimizer.pt")
                torch.save(self.scheduler.state_dict(), trainer / "scheduler.pt")
                state = {"step": step, "python_rng": _jsonable(random.getstate()),
                         "numpy_rng": _jsonable(np.random.get_state())}
                (trainer / "state.json").write_text(json.dumps(state))
                ckpt.save_tensors(trainer / "torch_rng.safetensors", {"cpu": torch.get_rng_state()})
            self._prune()
        self.accelerator.wait_for_everyone()
        return target

    def _prune(self) -> None:
        done = sorted(p for p in (self.folder / ckpt.CHECKPOINTS).glob("step-*") if ckpt.is_complete(p))
        for old in done[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in (self.folder / ckpt.CHECKPOINTS).glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _restore(self, folder: Path) -> int:
        from polyalign.files import read_json

        where = repr(str(folder))
        self.parts.policy.restore(folder, ckpt.read_meta(folder), self.config.policy.model)
        value = ckpt.load_tensors(folder / "value.safetensors", "value model")
        try:
            self.parts.learner.value.load_state_dict(value)
            self.optimizer.load_state_dict(_torch_load(folder / "trainer" / "optimizer.pt"))
            self.scheduler.load_state_dict(_torch_load(folder / "trainer" / "scheduler.pt"))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"checkpoint {where}: the trainer state does not fit this run ({exc})") from None
        state = read_json(folder / "trainer" / "state.json", "trainer state")
        random.setstate(_tupled(state["python_rng"]))
        np.random.set_state(tuple(_tupled(state["numpy_rng"])))  # type: ignore[arg-type]
        torch.set_rng_state(ckpt.load_tensors(folder / "trainer" / "torch_rng.safetensors", "RNG state")["cpu"])
        if self.main:
            _truncate_metrics(self.folder / METRICS, int(state["step"]))
        self.accelerator.wait_for_everyone()
        return int(state["step"])

    def finish(self) -> Path:
        """End the run: check that every process holds the same weights; return the last checkpoint."""
        digest = weights_digest(self.parts.learner)
        digests = self.accelerator.gather_for_metrics([digest], use_gather_object=True) \
            if self.accelerator.num_processes > 1 else [digest]
        if self.main:
            (self.folder / "sync.json").write_text(json.dumps(
                {"processes": self.accelerator.num_processes, "digests": digests,
                 "in_sync": len(set(digests)) == 1}, indent=2) + "\n")
        if self.config.log_with:
            self.accelerator.end_training()
        latest = ckpt.latest_checkpoint(self.folder)
        assert latest is not None
        return latest


def weights_digest(learner) -> str:
    """SHA-256 of every trainable tensor's bytes (and the value model's): equal digests = identical weights."""
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in learner.named_parameters() if p.requires_grad):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_run_config(config: TrainConfig) -> None:
    """The run folder's ``config.json``: what a resumed run must match (:meth:`TrainConfig.identity`)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / CONFIG).write_text(json.dumps(config.identity(), indent=2, sort_keys=True) + "\n")


def check_run_folder(config: TrainConfig, resume: bool) -> None:
    """Refuse, before anything loads, a run folder that cannot be used: ``resume`` of a folder without a run or
    of one started with another config, a new run over an existing one, an output path that cannot be a folder."""
    from polyalign.files import check_output_dir, read_json

    folder = config.run_dir
    saved = folder / CONFIG
    if resume:
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {str(folder)!r} holds no run (no {CONFIG}); start it without --resume")
        _check_same_run(read_json(saved, "run config"), config.identity(), folder)
        return
    if saved.is_file() or (folder / ckpt.CHECKPOINTS).exists():
        raise ConfigError(f"{str(folder)!r} already holds a run: pass --resume to continue it, or choose another "
                          "output folder")
    check_output_dir(folder, "run folder")


def _check_same_run(saved: dict, now: dict, folder: Path) -> None:
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(f"cannot resume {str(folder)!r}: its run was started with another {key!r} "
                              f"({json.dumps(saved.get(key))[:80]} there, {json.dumps(now.get(key))[:80]} now); "
                              "only log_with, keep_checkpoints and (with a constant schedule) steps may change")


def _torch_load(path: Path):
    if not path.is_file():
        raise ModelLoadError(f"trainer state {str(path)!r} is missing")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a truncated or foreign file
        raise ModelLoadError(f"trainer state {str(path)!r} is corrupt ({type(exc).__name__})") from None


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": str(value.dtype)}
    return value


def _tupled(value):
    if isinstance(value, dict) and "ndarray" in value:
        return np.array(value["ndarray"], dtype=value["dtype"])
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines a killed run wrote after its last checkpoint (they are redone)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _stderr_console():
    from rich.console import Console

    return Console(file=sys.stderr)
