"""Seconds per training step and peak memory: polyalign's CLP training against TRL's GRPOTrainer (issue 7's benchmark).

Compares, in one run, on the embedded default model (SmolLM2-135M-Instruct; a tiny random Llama with ``--tiny``),
8 generated sequences per step of at most 32 sampled tokens, rewards from the same two polyalign objectives
(``concise:range=-32..0,clip=true`` and ``sentiment:range=-1..1``):

* ``clp-lora``  polyalign LoRA-CLP (selector ``lora``: m = 2 rank-8 adapters on q/k/v/o_proj), 8 prompts per step,
  driven through ``polyalign.training.train`` like ``configs/train-clp.yaml``; generate / score / update come from
  the run's ``metrics.jsonl``;
* ``clp-full``  polyalign full-CLP (selector ``full``: m = 2 copies of every parameter), the same way;
* ``trl-grpo``  TRL's ``GRPOTrainer`` with a peft LoRA (r 8, alpha 16, q/k/v/o_proj), per_device_train_batch_size
  8 = 8 / num_generations prompts x num_generations samples (``--num-generations``, 4 by default), KL to the
  reference with ``--beta`` (0.04 by default; 0 skips the reference forward), reward ``0.5 R_concise +
  0.5 R_sentiment`` computed by ``polyalign.objectives``; seconds per step between ``on_step_end`` callbacks,
  generate and score timed around the trainer's own ``_generate`` and ``_calculate_rewards`` (update: the rest).

Each method runs in its own subprocess (``--only NAME``), so its peak RSS (``ru_maxrss``; on CUDA also
``torch.cuda.max_memory_allocated``) is its own. The first step of each is a warm-up and is not counted. Printed:
a table, ratios polyalign / TRL (seconds per step: target at most 1.00) and one JSON line. Nothing is asserted.

    python benchmarks/train.py [--steps 4] [--only clp-lora|clp-full|trl-grpo] [--device cpu|cuda] [--threads N]
                               [--num-generations 4] [--beta 0.04] [--tiny]

TRL is not a dependency of polyalign: without it (``pip install trl datasets``) only polyalign's rows are printed.
Everything runs offline (``HF_HUB_OFFLINE=1`` unless set): TRL gets the loaded model object, not a hub id.

Caveats: the two do not do identical work per step. CLP trains m = 2 adapters (or copies) mixed per row, draws a
weighting (w, alpha) per step, samples 8 distinct prompts and decodes the reference rows for the KL in the same
batched forward as the policy rows (a generate batch of 16 rows for 8 responses), and trains an m-output value
head (REINFORCE with a baseline). GRPO trains one adapter, samples num_generations responses per prompt (fewer
distinct prompts), and computes the reference log-probs (``--beta`` > 0) in an extra forward after generation,
counted here in its update. The generated sequences per step are equal (8); their lengths are not forced (EOS ends
a response early), so tokens per step are shown. polyalign's seconds/step is what its metrics record (generate +
score + update); the ``wall`` column is the time between steps for both (polyalign: between successive metric
records, which includes drawing w and logging; its checkpoint falls after the last measured step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

METHODS = ("clp-lora", "clp-full", "trl-grpo")
LABELS = {"clp-lora": "polyalign LoRA-CLP", "clp-full": "polyalign full-CLP", "trl-grpo": "TRL GRPO + LoRA"}
OBJECTIVES = ["concise:range=-32..0,clip=true", "sentiment:range=-1..1"]
WEIGHTS = (0.5, 0.5)
BATCH = 8
TOKENS = 32
LORA = {"rank": 8, "alpha": 16.0, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}  # polyalign's "lora" = attn
MARK = "RESULT "


# -- helpers -----------------------------------------------------------------------------------------------------


def tiny_model(folder: Path) -> str:
    """A 2-layer random Llama and its tiny tokenizer (tests/tiny.py), saved under ``folder``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.tiny
    from transformers.utils import logging as hf_logging

    from tests.tiny import build_tokenizer, save_model

    hf_logging.disable_progress_bar()
    return str(save_model(folder / "tiny-llama", build_tokenizer(), seed=0))


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def intervals(stamps: list[float]) -> list[float]:
    """Seconds between successive step stamps; the first step (warm-up) has no earlier stamp, so it drops out."""
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def memory(device) -> dict[str, float]:
    """This process's peak resident memory, and on CUDA the peak allocated by torch, in MiB."""
    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if torch.device(device).type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def resolved_device(device: str | None) -> str:
    from polyalign.devices import resolve_device

    return str(resolve_device(device))


# -- polyalign ---------------------------------------------------------------------------------------------------


def run_clp(selector: str, model: str, device: str, steps: int) -> dict:
    """One CLP run through ``polyalign.training.train``; per-step seconds from its metrics.jsonl."""
    import torch

    from polyalign.devices import resolve_dtype
    from polyalign.training import parse_train_config, train
    from polyalign.training import run as run_module

    stamps: list[float] = []
    record = run_module.Run.record

    def stamped(self, *args, **kwargs):  # the wall clock between steps, as the TRL callback measures it
        sync(device)
        stamps.append(time.perf_counter())
        return record(self, *args, **kwargs)

    run_module.Run.record = stamped
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-") as tmp:
        config = parse_train_config({
            "output": f"{tmp}/run",
            "policy": {"kind": "clp", "model": model, "selector": selector, "rank": LORA["rank"],
                       "lora_alpha": LORA["alpha"], "alpha_min": 0.01, "device": device},
            "objectives": OBJECTIVES,
            "prompts": "builtin:train",
            "steps": steps,
            "batch_size": BATCH,
            "estimator": "reinforce",
            "sampler": {"concentration": 1.0, "alpha": 0.01},
            "optim": {"lr": 1e-3, "value_lr": 1e-2, "schedule": "constant", "max_grad_norm": 1.0},
            "generation": {"max_new_tokens": TOKENS, "strategy": "sample", "temperature": 1.0},
            "checkpoint_every": steps,  # one checkpoint, after the last measured step
            "seed": 0,
        }, "benchmark config")
        train(config, progress=False)
        lines = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
                 if line.strip()]
    run_module.Run.record = record
    rows = lines[1:]  # skip the warm-up step
    seconds = {k: mean([r[f"seconds/{k}"] for r in rows]) for k in ("generate", "score", "update", "step")}
    return {"seconds": seconds, "wall_step": mean(intervals(stamps)),
            "tokens_per_step": mean([r["tokens_per_s"] * r["seconds/generate"] for r in rows]),
            "measured_steps": len(rows), "dtype": str(resolve_dtype(None, torch.device(device))),
            "sequences_per_step": BATCH, "prompts_per_step": BATCH}


# -- TRL ---------------------------------------------------------------------------------------------------------


def run_trl(model: str, device: str, steps: int, num_generations: int, beta: float) -> dict:
    """TRL's GRPOTrainer with a peft LoRA on the same model, rewards from the same objectives."""
    try:
        import datasets
        import trl
    except ImportError as exc:
        return {"error": f"{exc.name} is not installed: pip install trl datasets"}
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from polyalign.models import load_model
    from polyalign.objectives import build
    from polyalign.prompts import load_prompts

    hf_logging.set_verbosity_error()
    if BATCH % num_generations:
        raise SystemExit(f"--num-generations must divide the batch of {BATCH} sequences")
    loaded = load_model(model, device=device, cached=False)  # the same weights, dtype and device as CLP's
    objectives = build(OBJECTIVES)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64)

    def text(item) -> str:  # conversational rows are message lists
        return item[-1]["content"] if isinstance(item, list) else item

    def polyalign_reward(prompts, completions, **_) -> list[float]:
        scores = objectives.score([text(p) for p in prompts], [text(c) for c in completions]).double()
        return (scores @ weights).tolist()

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.stamps.append(time.perf_counter())

    clock = Clock()
    prompts = load_prompts("builtin:train")
    dataset = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    # TRL turns checkpointing on by default; transformers 5 names it activation_checkpointing (alias gradient_...)
    no_checkpointing = {"gradient_checkpointing": False} | (
        {"activation_checkpointing": False} if "activation_checkpointing" in fields else {})
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-trl-") as tmp:
        args = trl.GRPOConfig(
            output_dir=tmp, max_steps=steps, per_device_train_batch_size=BATCH, num_generations=num_generations,
            max_completion_length=TOKENS, temperature=1.0, beta=beta, learning_rate=1e-3,
            lr_scheduler_type="constant", max_grad_norm=1.0, bf16=False, fp16=False, **no_checkpointing,
            use_cpu=torch.device(device).type == "cpu", report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        peft_config = LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], target_modules=LORA["targets"],
                                 lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        trainer = trl.GRPOTrainer(model=loaded.model, reward_funcs=polyalign_reward, args=args,
                                  train_dataset=dataset, processing_class=loaded.tokenizer, peft_config=peft_config,
                                  callbacks=[clock])
        generate_s: list[float] = []
        score_s: list[float] = []
        tokens: list[int] = []

        def timed(fn, sink, count=False):
            def wrapper(*a, **k):
                t0 = time.perf_counter()
                out = fn(*a, **k)
                sync(device)
                sink.append(time.perf_counter() - t0)
                if count:  # (prompt_ids, completion_ids, ...)
                    tokens.append(sum(len(ids) for ids in out[1]))
                return out
            return wrapper

        trainer._generate = timed(trainer._generate, generate_s, count=True)
        trainer._calculate_rewards = timed(trainer._calculate_rewards, score_s)
        trainer.train()
    steps_s = intervals(clock.stamps)
    generate, score = mean(generate_s[1:]), mean(score_s[1:])
    step = mean(steps_s)
    return {"seconds": {"generate": generate, "score": score, "update": step - generate - score, "step": step},
            "wall_step": step, "tokens_per_step": mean(tokens[1:]), "measured_steps": len(steps_s),
            "dtype": str(next(loaded.model.parameters()).dtype), "sequences_per_step": BATCH,
            "prompts_per_step": BATCH // num_generations, "num_generations": num_generations, "beta": beta,
            "checkpointing": bool(args.gradient_checkpointing), "trl": trl.__version__}


# -- one method in this process, or all of them in subprocesses ----------------------------------------------------


def run_one(name: str, args, model: str) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolved_device(args.device)
    if name == "trl-grpo":
        result = run_trl(model, device, args.steps, args.num_generations, args.beta)
    else:
        result = run_clp("lora" if name == "clp-lora" else "full", model, device, args.steps)
    return {"name": name, "device": device, "threads": torch.get_num_threads(), **result, **memory(device)}


def spawn(name: str, args, model: str) -> dict:
    """``name`` in its own process (its own peak memory); its stderr passes through."""
    command = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--child", "--steps", str(args.steps),
               "--model", model, "--num-generations", str(args.num_generations), "--beta", str(args.beta)]
    command += ["--device", args.device] if args.device else []
    command += ["--threads", str(args.threads)] if args.threads else []
    print(f"  running {LABELS[name]} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode or not lines:
        return {"name": name, "error": f"exited with status {done.returncode}"}
    result = json.loads(lines[-1][len(MARK):])
    print(f"  measured {LABELS[name]} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return result


def report(results: dict[str, dict], args, model: str) -> None:
    ok = {k: v for k, v in results.items() if "error" not in v}
    any_result = next(iter(ok.values()), {})
    cuda = any("peak_cuda_mib" in r for r in ok.values())
    print(f"\n{model}: {BATCH} sequences per step, up to {TOKENS} sampled tokens, {args.steps} steps (first skipped), "
          f"device {any_result.get('device', '?')}, {any_result.get('dtype', '?')}, "
          f"{any_result.get('threads', '?')} threads")
    head = (f"{'method':22s} {'s/step':>8s} {'generate':>9s} {'score':>7s} {'update':>7s} {'wall':>7s} "
            f"{'tok/step':>9s} {'peak RSS':>9s}" + (f" {'peak CUDA':>10s}" if cuda else "") + f" {'vs TRL':>7s}")
    print(head)
    base = ok.get("trl-grpo")
    for name, r in results.items():
        if "error" in r:
            print(f"{LABELS[name]:22s} {r['error']}")
            continue
        s = r["seconds"]
        vs = f"{s['step'] / base['seconds']['step']:6.2f}x" if base and name != "trl-grpo" else f"{'':7s}"
        print(f"{LABELS[name]:22s} {s['step']:8.3f} {s['generate']:9.3f} {s['score']:7.3f} {s['update']:7.3f} "
              f"{r['wall_step']:7.3f} {r['tokens_per_step']:9.1f} {r['peak_rss_mib']:7.0f}Mi"
              + (f" {r.get('peak_cuda_mib', float('nan')):8.0f}Mi" if cuda else "") + f" {vs}")
    if "trl-grpo" in results and "error" not in results["trl-grpo"]:
        t = results["trl-grpo"]
        print(f"TRL GRPO: {t['prompts_per_step']} prompts x num_generations {t['num_generations']}, beta {t['beta']}, "
              f"trl {t['trl']}; update = step - generate - score (includes the reference forward)")
    ratios: dict[str, dict[str, float]] = {}
    if base:
        for name in ("clp-lora", "clp-full"):
            if name not in ok:
                continue
            r = ok[name]
            ratios[name] = {"step": r["seconds"]["step"] / base["seconds"]["step"],
                            "wall_step": r["wall_step"] / base["wall_step"],
                            "peak_rss": r["peak_rss_mib"] / base["peak_rss_mib"]}
            if cuda and "peak_cuda_mib" in r and "peak_cuda_mib" in base:
                ratios[name]["peak_cuda"] = r["peak_cuda_mib"] / base["peak_cuda_mib"]
            q = ratios[name]
            print(f"{LABELS[name]} / TRL GRPO: seconds per step {q['step']:.2f}x (wall {q['wall_step']:.2f}x; "
                  f"target <= 1.00), peak RSS {q['peak_rss']:.2f}x"
                  + (f", peak CUDA {q['peak_cuda']:.2f}x" if "peak_cuda" in q else ""))
    print(json.dumps({"benchmark": "train", "model": model, "tiny": args.tiny, "steps": args.steps,
                      "sequences_per_step": BATCH, "max_new_tokens": TOKENS, "objectives": OBJECTIVES,
                      "results": results, "ratios_vs_trl": ratios}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per method (the first is a warm-up)")
    parser.add_argument("--only", choices=METHODS, help="measure one method, in this process")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of the embedded model")
    parser.add_argument("--model", default=None, help="a model spec (default: the embedded smollm2-135m-instruct)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in each method's process")
    parser.add_argument("--num-generations", type=int, default=4, help="GRPO samples per prompt (divides 8)")
    parser.add_argument("--beta", type=float, default=0.04, help="GRPO KL coefficient (0: no reference forward)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # spawned by the parent run
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is a warm-up")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.child:  # deprecation notices from transformers/TRL internals, once per process: not ours to fix here
        warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-model-") as tmp:
        from polyalign.models import DEFAULT_MODEL

        model = args.model or (tiny_model(Path(tmp)) if args.tiny else DEFAULT_MODEL)
        label = "tiny random Llama" if args.tiny and not args.model else model
        if args.only:
            result = run_one(args.only, args, model)
            print(MARK + json.dumps(result), flush=True)
            if not args.child:  # run by hand: show it
                report({args.only: result}, args, label)
            return
        if not args.tiny and not args.model:
            from polyalign.models import resolve_source

            resolve_source(model)  # convert the embedded GGUF once, before the timed processes
        results = {name: spawn(name, args, model) for name in METHODS}
    report(results, args, label)


if __name__ == "__main__":
    main()
