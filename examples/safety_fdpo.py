"""MOD's safety example on the embedded model, with experts made here from a reward function and no labels.

1. Sample k responses per prompt from the reference (SmolLM2-135M-Instruct) once.
2. Pair them twice, best against worst: by ``harmless`` (the share of caution / refusal words, :func:`caution`)
   and by ``helpful`` (prompt-response relevance, all-MiniLM-L6-v2).
3. Train one f-DPO expert per objective under JSD (Wang et al. 2023; LoRA), ``polyalign train-expert``'s code.
4. Decode them with MOD under the same JSD over a sweep of weights including (5, -4) and (-4, 5), next to the
   persona experts of the demo and the plain model: one ``polyalign evaluate`` config
   (``configs/fdpo-safety.yaml``), one plot (``pareto.png``).

Run it from the repository root: ``python examples/safety_fdpo.py`` (about 20 minutes on a 2-core CPU; the README
has the measured time and numbers). ``--out`` moves the run folder (the evaluation config's adapter paths follow).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CAUTION = frozenset("""safe safely safety careful carefully caution cautious avoid risk risks risky danger dangerous
harm harmful hazard consult professional doctor sorry cannot can't unable never warning warn protect responsible
important please note however ensure always advice recommend seek""".split())
WORD = re.compile(r"[a-z']+")
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fdpo-safety.yaml"


def caution(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """``harmless``: the share of a response's words that are caution or refusal words (higher is more careful)."""
    out = []
    for text in responses:
        words = WORD.findall(text.lower())
        out.append(sum(w in CAUTION for w in words) / max(len(words), 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/safety-fdpo"))
    parser.add_argument("--prompts", type=int, default=32, help="training prompts (builtin:train)")
    parser.add_argument("--k", type=int, default=4, help="responses sampled per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="tokens sampled per response")
    parser.add_argument("--steps", type=int, default=8, help="f-DPO steps per expert (batch 8)")
    parser.add_argument("--divergence", default="jsd")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # python:safety_fdpo:caution
    started = time.perf_counter()

    from polyalign.experts import Expert
    from polyalign.interface import GenerationConfig
    from polyalign.objectives import build
    from polyalign.policies.plain import Plain
    from polyalign.preferences import pair_best_worst, sample_responses, scalarised_scores, write_preferences
    from polyalign.prompts import load_prompts
    from polyalign.training.fdpo_config import parse_expert_config
    from polyalign.training.fdpo_recipe import train_expert

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts("builtin:train", limit=args.prompts)
    t0 = time.perf_counter()
    cache = out / f"samples-{len(prompts)}x{args.k}x{args.tokens}.json"  # a rerun skips the sampling
    if cache.is_file():
        responses = json.loads(cache.read_text())
    else:
        responses = sample_responses(Plain(Expert()), prompts, args.k, seed=0,
                                     generation=GenerationConfig(max_new_tokens=args.tokens))
        cache.write_text(json.dumps(responses))
    print(f"sampled {args.k} x {len(prompts)} responses in {time.perf_counter() - t0:.0f} s", flush=True)
    objectives = {"harmless": "python:safety_fdpo:caution,name=harmless", "helpful": "relevance:name=helpful"}
    timings = {}
    for name, spec in objectives.items():
        scores = scalarised_scores(build([spec]), prompts, responses)
        pairs, kept, stats = pair_best_worst(prompts, responses, scores)
        path = write_preferences(out / f"{name}-pairs.jsonl", pairs, kept)
        print(f"{name}: {stats.summary()} -> {path}", flush=True)
        config = parse_expert_config({
            "output": str(out / name), "objective": name, "divergence": args.divergence, "beta": 0.1,
            "preferences": str(path), "policy": {"kind": "lora", "rank": 8}, "steps": args.steps, "batch_size": 8,
            "max_length": 128, "optim": {"lr": 1e-3}, "checkpoint_every": args.steps})
        t0 = time.perf_counter()
        resume = (out / name / "config.json").is_file()
        expert = train_expert(config, resume=resume, progress=True)
        timings[name] = time.perf_counter() - t0
        last = json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])
        print(f"{name} expert: {expert} ({timings[name]:.0f} s; last step loss {last['loss']:.3f}, "
              f"accuracy {last['accuracy']:.2f})", flush=True)

    from polyalign.evaluation import evaluate, load_config

    config = load_config(CONFIG)
    if out != Path("runs/safety-fdpo"):
        text = CONFIG.read_text().replace("runs/safety-fdpo", str(out))
        (out / "eval.yaml").write_text(text)
        config = load_config(out / "eval.yaml")
    t0 = time.perf_counter()
    result, paths = evaluate(config, progress=True, overwrite=True)
    print(f"evaluation: {time.perf_counter() - t0:.0f} s; {paths.get('pareto')}", flush=True)
    print_table(result)
    print(f"total wall time: {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def print_table(result) -> None:
    """Mean harmless / helpful / KL of every method at every weighting, and each front's indicators."""
    print(f"{'method':14} {'weights':>12} " + " ".join(f"{n:>9}" for n in result.objectives) + "  KL (nats)")
    for sweep in result.sweeps:
        for p in sweep.points:
            kl = "" if p.kl is None else f"{p.kl:.2f}"
            print(f"{sweep.method:14} {p.label:>12} " + " ".join(f"{m:9.4f}" for m in p.mean) + f"  {kl}")
    for f in result.indicators:
        print(f"{f.method}: hypervolume {f.hypervolume:.4g}, spearman {f.spearman}")


if __name__ == "__main__":
    main()
