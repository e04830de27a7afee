"""Multi-task RL for a conditioned language policy (CLP paper, Algorithm 1), on accelerate.

The loop reads like the algorithm; each named step is a function a test can call alone::

    for step in range(start, steps):
        w, alpha = draw_weighting(config, step)                 # Dirichlet(c) and alpha = f_mix^-1(U), or fixed
        rollout  = generate(policy, prompts, w, alpha, ...)     # samples, with log-probs under pi and pi_ref
        R        = score(objectives, rollout)                   # [B, m], normalised
        reward   = (1 - alpha) R @ w - alpha KL                 # estimators.scalarised_reward
        loss     = REINFORCE with V = sum_i w_i V_i(x), or RLOO
        run.step(...)                                            # backward, clip, optimizer, schedule, metrics,
                                                                 # atomic checkpoint

The same code runs on CPU, one GPU or several processes (``accelerate launch``): every process draws the same
(w, alpha) and its own prompts; DDP averages the gradients.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from polyalign.interface import Generation, GenerationConfig
from polyalign.training import estimators as E
from polyalign.training.config import TrainConfig
from polyalign.training.learner import Learner, make_batch
from polyalign.training.run import Run, build_run, check_run_folder, mix_seed


def draw_weighting(config: TrainConfig, step: int) -> tuple[torch.Tensor, float]:
    """This step's (w, alpha): ``w ~ Dirichlet(c)`` and ``alpha = f_mix^-1(U)`` (Algorithm 1, Appendix A.4), each
    unless held fixed; drawn from the step number alone, so every process and every resumed run agrees."""
    from polyalign.conditioning import sample_alpha, sample_weights

    generator = torch.Generator().manual_seed(mix_seed(config.seed, step, 0))
    m = len(config.objectives)
    s = config.sampler
    w = torch.tensor(s.weights, dtype=torch.float64) if s.weights is not None else \
        sample_weights(m, generator, s.concentration)
    alpha = s.alpha if s.alpha is not None else sample_alpha(generator, config.policy.f_mix, config.policy.alpha_min)
    return w, float(alpha)


def prompt_batch(prompts: Sequence[str], config: TrainConfig, step: int, micro: int, rank: int, world: int
                 ) -> list[str]:
    """The prompts of one micro-batch: epochs of seeded permutations, consumed in order by (step, micro, rank), so
    the data position is a function of the step (and a resumed run reads what the killed one would have)."""
    n, size = len(prompts), config.batch_size
    first = ((step * config.optim.accumulation_steps + micro) * world + rank) * size
    orders: dict[int, torch.Tensor] = {}  # a batch spans at most a few epochs
    out = []
    for index in range(first, first + size):
        epoch, offset = divmod(index, n)
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(config.seed, epoch, 1)))
        out.append(prompts[int(orders[epoch][offset])])
    return out


@dataclass
class Rollout:
    """Sampled responses of one micro-batch and what the loss needs from them."""

    prompts: list[str]
    generations: list[Generation]
    rewards: torch.Tensor
    """Per objective ``[B, m]`` (normalised when the run has a normaliser)."""
    kl: torch.Tensor
    """KL(pi || pi_ref) of each response, summed over its tokens ``[B]``."""
    reward: torch.Tensor
    """The scalarised reward ``(1 - alpha) w . R - alpha KL`` ``[B]``."""
    seconds_generate: float
    """Sampling, and the reference's teacher-forced log-probs for the KL."""
    seconds_score: float


def generate(policy, prompts: list[str], weights: torch.Tensor, alpha: float, config: GenerationConfig, seed: int
             ) -> list[Generation]:
    """Sample one response per row at (w, alpha). Every response holds at least one token (an immediate EOS
    is a response whose text is empty), so each has log-probs to learn from."""
    return policy.generate(prompts, weights.tolist(), alpha, config.model_copy(update={"seed": seed}))


def reference_kl(learner: Learner, policy, prompts: list[str], gens: list[Generation]) -> torch.Tensor:
    """KL(pi || pi_ref) of each sampled response, summed over its tokens: the policy's log-probs come from
    decoding, the reference's from one teacher-forced forward at its coefficients ``(0, ..., 0, 1)`` (the
    reference reads the prompt without CONDPROMPT text). Decoding then needs only the policy's rows."""
    device = next(learner.parameters()).device
    batch = make_batch(policy.reference_prompt_ids(prompts), [g.token_ids for g in gens], learner.pad_id, device)
    ref = learner.token_logprobs(batch, policy.reference_row().to(device))
    length = batch.response_ids.shape[1]
    logprobs = torch.tensor([g.logprobs + [0.0] * (length - len(g.logprobs)) for g in gens], dtype=torch.float64)
    return E.sequence_kl(logprobs, ref.double().cpu(), batch.response_mask.double().cpu())


def rollout(policy, learner: Learner, objectives, prompts: list[str], weights: torch.Tensor, alpha: float,
            config: TrainConfig, seed: int) -> Rollout:
    """Generate, score and scalarise one micro-batch (RLOO: ``rloo_k`` samples per prompt). ``policy`` decodes
    the policy's rows only (:meth:`CLP.without_reference`); the KL's reference is teacher-forced."""
    k = config.rloo_k if config.estimator == "rloo" else 1
    rows = [p for p in prompts for _ in range(k)]
    t0 = time.perf_counter()
    gens = generate(policy, rows, weights, alpha, config.generation, seed)
    kl = reference_kl(learner, policy, rows, gens)
    t1 = time.perf_counter()
    rewards = objectives.score(rows, [g.text for g in gens])
    t2 = time.perf_counter()
    reward = E.scalarised_reward(rewards, weights, alpha, kl)
    return Rollout(rows, gens, rewards, kl, reward, t1 - t0, t2 - t1)


def loss_terms(learner: Learner, batch_rollout: Rollout, weights: torch.Tensor, coefficients: torch.Tensor,
               config: TrainConfig, gather) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch and its metrics: REINFORCE with the m-output value baseline (advantages
    normalised over every process's batch), or RLOO. ``learner`` may be wrapped (DDP): it is only called."""
    device = coefficients.device
    gens = batch_rollout.generations
    pad = getattr(learner, "module", learner).pad_id
    batch = make_batch([g.prompt_token_ids for g in gens], [g.token_ids for g in gens], pad, device)
    mask = batch.response_mask
    logprobs, values, entropy = learner(batch, coefficients)
    reward = batch_rollout.reward.to(device)
    metrics: dict[str, float] = {"entropy": float(entropy)}
    if config.estimator == "rloo":
        advantages = E.rloo_advantages(reward, config.rloo_k)
        # RLOO needs no value model; a zero term keeps its parameters in the graph, as DDP expects
        loss = E.policy_gradient_loss(logprobs, mask, advantages) + 0.0 * values.sum()
    else:
        value = E.combined_value(values, weights.to(device))
        raw = reward - value.detach().double()
        everyone = gather(raw)
        advantages = E.normalise(raw, everyone.mean(), everyone.std(unbiased=False))
        v_loss = E.value_loss(value, reward)
        loss = E.policy_gradient_loss(logprobs, mask, advantages) + config.value_coef * v_loss
        metrics["value_error"] = float(v_loss.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or ``resume``) the training described by ``config``; returns the final checkpoint's directory."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if config.policy.kind == "experts":
        return train_experts(config, resume=resume, progress=progress)
    check_run_folder(config, resume)
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
                              log_with=config.log_with or None, project_dir=str(config.run_dir))
    parts = build_run(config, accelerator)
    run = Run(config, accelerator, parts, resume=resume, progress=progress)
    policy, objectives = parts.policy.without_reference(), parts.objectives
    world, rank = accelerator.num_processes, accelerator.process_index
    accumulation = config.optim.accumulation_steps
    for step in run.steps():
        weights, alpha = draw_weighting(config, step)
        coefficients = policy.parameter_coefficients(policy.head_weights(weights[None], alpha)).to(
            accelerator.device)
        timer = {"generate": 0.0, "score": 0.0, "update": 0.0}
        records = []
        for micro in range(accumulation):
            prompts = prompt_batch(parts.prompts, config, step, micro, rank, world)
            batch_rollout = rollout(policy, parts.learner, objectives, prompts, weights, alpha, config,
                                    mix_seed(config.seed, step, micro, 2 + rank))
            t0 = time.perf_counter()
            sync = nullcontext() if micro == accumulation - 1 else accelerator.no_sync(run.model)
            with sync:
                loss, metrics = loss_terms(run.model, batch_rollout, weights, coefficients, config, run.gather)
                accelerator.backward(loss / accumulation)
            timer["generate"] += batch_rollout.seconds_generate
            timer["score"] += batch_rollout.seconds_score
            timer["update"] += time.perf_counter() - t0
            records.append((batch_rollout, metrics))
        t0 = time.perf_counter()
        grad_norms = run.optimizer_step()
        timer["update"] += time.perf_counter() - t0
        run.record(step, weights, alpha, records, timer, grad_norms)
    return run.finish()


def train_experts(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train one single-objective expert per objective (``policy.kind: experts``): a fixed-weighting run at
    ``w = e_i`` each, ``steps / m`` steps long, in ``OUTPUT/experts/<objective>``. Returns ``OUTPUT``; a resumed
    run continues the expert it stopped in and starts the ones after it."""
    from polyalign.training.run import CONFIG, build_objectives, write_run_config

    check_run_folder(config, resume)
    names = build_objectives(config).names
    if not resume:  # a resumed run's config.json was just checked to match
        write_run_config(config)
    for expert in config.expert_runs(names):
        train(expert, resume=resume and (expert.run_dir / CONFIG).is_file(), progress=progress)
    return config.run_dir
