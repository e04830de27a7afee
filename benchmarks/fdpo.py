"""Pairs per second of f-DPO training: polyalign's ``train-expert`` loop against TRL's ``DPOTrainer`` (issue 9).

Same run, same settings, on the embedded default model (SmolLM2-135M-Instruct; a tiny random Llama with
``--tiny``): a peft LoRA (r 8, alpha 16, q/k/v/o_proj), batch 8 pairs, about 128 tokens per pair (a ~32-token
chat prompt and two ~48-token responses, EOS included), AdamW at a constant lr, beta 0.1, the divergence of
``--divergence`` (TRL's name for it; Jeffrey is polyalign's only), the reference log-probs computed every step by
the base with the adapter off (TRL's default for a peft model; polyalign does the same). Each side runs in its
own subprocess (``--only``) so that its peak RSS is its own. Seconds per step are the wall time between
successive steps (the first step is a warm-up and drops out); pairs/s = 8 / that. Printed: a table, the ratio
polyalign / TRL (pairs/s: target at least 1.00) and one JSON line. Nothing is asserted.

    python benchmarks/fdpo.py [--steps 6] [--only polyalign|trl] [--divergence reverse_kl|forward_kl|jsd|alpha:0.5]
                              [--device cpu|cuda] [--threads N] [--tiny]

TRL is not a dependency of polyalign: without it (``pip install trl datasets``) only polyalign's row prints.
"""

from __future__ import annotations

import argparse
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

METHODS = ("polyalign", "trl")
LABELS = {"polyalign": "polyalign train-expert", "trl": "TRL DPOTrainer"}
BATCH, PROMPT_TOKENS, RESPONSE_TOKENS = 8, 32, 48
LORA = {"r": 8, "lora_alpha": 16.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LR, BETA = 5e-4, 0.1
MARK = "RESULT "
TRL_NAMES = {"reverse_kl": "reverse_kl", "forward_kl": "forward_kl", "jsd": "js_divergence"}


def tiny_model(folder: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.tiny
    from tests.tiny import build_tokenizer, save_model

    return str(save_model(folder / "tiny-llama", build_tokenizer(), seed=0))


def make_pairs(model: str, n: int) -> list[dict[str, str]]:
    """``n`` pairs of about 128 tokens: a builtin prompt and two responses cut to RESPONSE_TOKENS - 1 tokens."""
    from polyalign.models import load_model
    from polyalign.prompts import load_prompts

    tok = load_model(model).tokenizer
    prompts = load_prompts("builtin:train")
    text = " ".join(load_prompts("builtin:heldout"))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    cut = RESPONSE_TOKENS - 1  # + EOS

    def span(i: int) -> str:
        start = (i * 37) % max(1, len(ids) - cut)
        return tok.decode(ids[start:start + cut])

    return [{"prompt": prompts[i % len(prompts)], "chosen": span(2 * i), "rejected": span(2 * i + 1)}
            for i in range(n)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def run_polyalign(model: str, pairs: Path, device: str, steps: int, divergence: str) -> dict:
    from polyalign.training import fdpo_recipe
    from polyalign.training.fdpo_config import parse_expert_config

    stamps: list[float] = []
    record = fdpo_recipe.ExpertRun.record_pairs

    def stamped(self, *args, **kwargs):
        stamps.append(time.perf_counter())
        return record(self, *args, **kwargs)

    fdpo_recipe.ExpertRun.record_pairs = stamped
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-fdpo-") as out:
        config = parse_expert_config({
            "output": str(Path(out) / "run"), "preferences": str(pairs), "divergence": divergence, "beta": BETA,
            "policy": {"kind": "lora", "model": model, "rank": LORA["r"], "lora_alpha": LORA["lora_alpha"],
                       "target_modules": LORA["target_modules"], "device": device},
            "steps": steps, "batch_size": BATCH, "max_length": 1024, "optim": {"lr": LR},
            "checkpoint_every": steps})
        fdpo_recipe.train_expert(config, progress=False)
        lines = [json.loads(x) for x in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    step = statistics.fmean(intervals(stamps))
    return {"seconds_per_step": step, "pairs_per_s": BATCH / step,
            "recorded_seconds_per_step": statistics.fmean(x["seconds/step"] for x in lines[1:]),
            "final_loss": lines[-1]["loss"]}


def run_trl(model: str, pairs: Path, device: str, steps: int, divergence: str) -> dict:
    try:
        import datasets
        import trl
    except ImportError as exc:
        return {"error": f"{exc.name} is not installed: pip install trl datasets"}
    if divergence.startswith("alpha:"):
        trl_divergence, coef = "alpha_divergence", 1.0 - float(divergence.split(":")[1])  # TRL's coef = 1 - A
    elif divergence in TRL_NAMES:
        trl_divergence, coef = TRL_NAMES[divergence], 0.5
    else:
        return {"error": f"TRL has no {divergence!r} divergence"}
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from polyalign.models import load_model

    hf_logging.set_verbosity_error()
    loaded = load_model(model, device=device, cached=False)
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    data = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="polyalign-bench-trl-") as out:
        args = trl.DPOConfig(output_dir=out, per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
                             lr_scheduler_type="constant", beta=BETA, f_divergence_type=trl_divergence,
                             f_alpha_divergence_coef=coef, logging_steps=1, save_strategy="no", report_to=[],
                             max_length=1024, use_cpu=device == "cpu", dataloader_num_workers=0, seed=0,
                             disable_tqdm=True)
        trainer = trl.DPOTrainer(model=loaded.model, args=args, train_dataset=data,
                                 processing_class=loaded.tokenizer,
                                 peft_config=LoraConfig(lora_dropout=0.0, bias="none", **LORA),
                                 callbacks=[Stamp()])
        trainer.train()
        losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    step = statistics.fmean(intervals(stamps))
    return {"seconds_per_step": step, "pairs_per_s": BATCH / step, "final_loss": losses[-1] if losses else None,
            "trl": trl.__version__}


def run_one(name: str, args, model: str, pairs: Path) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from polyalign.devices import resolve_device

    device = str(resolve_device(args.device))
    run = run_trl if name == "trl" else run_polyalign
    result = run(model, pairs, device, args.steps, args.divergence)
    return {"name": name, "device": device, "threads": torch.get_num_threads(), **result,
            "peak_rss_mib": peak_rss_mib()}


def spawn(name: str, args, model: str, pairs: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--child", "--steps", str(args.steps),
               "--model", model, "--pairs", str(pairs), "--divergence", args.divergence]
    command += ["--device", args.device] if args.device else []
    command += ["--threads", str(args.threads)] if args.threads else []
    print(f"  running {LABELS[name]} ...", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if done.returncode or not lines:
        return {"name": name, "error": f"exited with status {done.returncode}"}
    return json.loads(lines[-1][len(MARK):])


def report(results: dict[str, dict], args, model: str) -> None:
    print(f"\n{model}: batch {BATCH} pairs of ~{PROMPT_TOKENS}+2x{RESPONSE_TOKENS} tokens, LoRA r {LORA['r']}, "
          f"{args.divergence}, {args.steps} steps (first skipped)")
    print(f"{'method':24s} {'s/step':>8s} {'pairs/s':>8s} {'peak RSS':>9s} {'loss':>7s}")
    for name, r in results.items():
        if "error" in r:
            print(f"{LABELS[name]:24s} {r['error']}")
            continue
        loss = f"{r['final_loss']:.3f}" if isinstance(r.get("final_loss"), float) else "-"
        print(f"{LABELS[name]:24s} {r['seconds_per_step']:8.3f} {r['pairs_per_s']:8.2f} {r['peak_rss_mib']:7.0f}Mi "
              f"{loss:>7s}")
    ratio = {}
    ours, theirs = results.get("polyalign", {}), results.get("trl", {})
    if "error" not in ours and theirs and "error" not in theirs:
        ratio = {"pairs_per_s": ours["pairs_per_s"] / theirs["pairs_per_s"],
                 "peak_rss": ours["peak_rss_mib"] / theirs["peak_rss_mib"]}
        print(f"polyalign / TRL: pairs per second {ratio['pairs_per_s']:.2f}x (target >= 1.00), "
              f"peak RSS {ratio['peak_rss']:.2f}x")
    print(json.dumps({"benchmark": "fdpo", "model": model, "steps": args.steps, "divergence": args.divergence,
                      "batch": BATCH, "results": results, "ratios_vs_trl": ratio}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="training steps per method (the first is a warm-up)")
    parser.add_argument("--only", choices=METHODS, help="measure one method, in this process")
    parser.add_argument("--divergence", default="reverse_kl", help="reverse_kl, forward_kl, jsd or alpha:A")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of the embedded model")
    parser.add_argument("--model", default=None)
    parser.add_argument("--pairs", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3: the first step is a warm-up")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    with tempfile.TemporaryDirectory(prefix="polyalign-bench-fdpo-data-") as tmp:
        from polyalign.models import DEFAULT_MODEL

        model = args.model or (tiny_model(Path(tmp)) if args.tiny else DEFAULT_MODEL)
        if args.only:
            print(MARK + json.dumps(run_one(args.only, args, model, args.pairs)), flush=True)
            return
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(model, BATCH * args.steps)))
        results = {name: spawn(name, args, model, pairs) for name in METHODS}
        report(results, args, model)


if __name__ == "__main__":
    main()
