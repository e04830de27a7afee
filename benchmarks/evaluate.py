"""Wall time of a 2-objective, 11-point sweep over 32 prompts on the embedded model, MOD with persona experts.

Split into model loading, generation, scoring and drawing (JSON, CSV, three PNGs, HTML).

    python benchmarks/evaluate.py [--prompts 32] [--points 11] [--max-new-tokens 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from polyalign.evaluation import run_sweep, simplex_grid, write_outputs
from polyalign.interface import GenerationConfig
from polyalign.objectives import build
from polyalign.policies import MOD

PERSONAS = {
    "sentiment": "You are warm, kind and enthusiastic. Answer with a very positive, upbeat tone.",
    "concise": "You are terse. Answer in as few words as possible.",
}
TOPICS = ["the ocean", "a rainy day", "learning to cook", "the moon", "a city at night", "old books",
          "running a marathon", "a cat", "winter mornings", "the internet", "a garden", "trains",
          "mathematics", "a birthday party", "coffee", "mountains"]
PROMPTS = [f"Tell me about {t}." for t in TOPICS] + [f"What do you think of {t}?" for t in TOPICS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per generate call (default: all)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    t0 = time.perf_counter()
    policy = MOD.from_personas(PERSONAS, device=args.device)
    objectives = build(["sentiment", "concise"])
    # lazy model loading and objective state happen on first use: keep them out of the timings
    policy.generate(prompts[:1], [0.5, 0.5], config=GenerationConfig(max_new_tokens=2))
    objectives.score(["warm up"], ["warm up"])
    load = time.perf_counter() - t0

    config = GenerationConfig(max_new_tokens=args.max_new_tokens, strategy="greedy", seed=0)
    sweep = run_sweep(policy, prompts, simplex_grid(2, args.points), objectives, config=config, progress=False,
                      name="mod-personas", batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as run_dir:
        t1 = time.perf_counter()
        paths = write_outputs(sweep, run_dir)
        draw = time.perf_counter() - t1
        assert all(p.is_file() for p in paths.values())

    gen, score = sweep.timings["generation"], sweep.timings["scoring"]
    summary = sweep.timings["summary"]
    total = gen + score + summary + draw
    tokens = sum(len(r.text.split()) for p in sweep.points for r in p.responses)
    print(f"sweep: {args.points} weightings x {len(prompts)} prompts, max_new_tokens={args.max_new_tokens}, "
          f"greedy, device={args.device or 'auto'}")
    print(f"{'load + warm-up (not in total)':28s} {load:8.2f} s")
    for name, seconds in (("generation", gen), ("scoring", score), ("summary (bootstrap CIs)", summary),
                          ("outputs (json/csv/png/html)", draw)):
        print(f"{name:28s} {seconds:8.2f} s  {seconds / total:6.1%}")
    print(f"{'total':28s} {total:8.2f} s   ({len(prompts) * args.points / gen:.1f} responses/s generated, "
          f"{tokens} words)")
    for p in sweep.points:
        print(f"  {p.label:14s} sentiment={p.mean[0]:+.3f}  concise={p.mean[1]:+.3f}  KL={p.kl:.2f}")


if __name__ == "__main__":
    main()
