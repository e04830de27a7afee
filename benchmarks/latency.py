"""Per-token generation latency and throughput of every steerable method on the embedded default model (issue 8's
benchmark), as ratios to the plain model measured in the same run.

Methods: CLP with LoRA copies and with logit-layer copies, Rewarded Soups (LoRA), Prompting, DeRa (the aligned
model and the reference: two models per step) and MOD over two LoRA experts and the reference, all at a mixed
weighting. Latency does not depend on training, so the methods are built untrained on the same base; every run
generates exactly ``--tokens`` tokens per prompt (greedy). CLP, Soup and Prompting decode the policy rows only
(``without_reference()``), as a server does: they need no second model per step; ``clp-lora+ref`` also decodes
the reference's rows, which evaluation does to report the KL.

    python benchmarks/latency.py [--batches 1 16] [--tokens 32] [--repeats 3] [--threads N]

Target (CLP paper, Section 5): CLP at most 0.6x DeRa's per-token latency.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from polyalign.experts import Expert
from polyalign.interface import GenerationConfig
from polyalign.models import DEFAULT_MODEL
from polyalign.policies import MOD, Plain
from polyalign.policies.clp import CLP
from polyalign.policies.dera import DeRa
from polyalign.policies.prompted import Prompted
from polyalign.policies.soup import Soup

OBJECTIVES = ["concise", "sentiment"]
TOPICS = ["the sea", "bread", "trains", "winter", "music", "chess", "bees", "rivers", "maps", "tea", "clocks",
          "snow", "owls", "glass", "paper", "stars"]


def build(folder: Path) -> dict[str, tuple[object, list[float]]]:
    """Every method, untrained, with the weights it decodes at."""
    lora = CLP.create(OBJECTIVES, DEFAULT_MODEL, "lora")
    with torch.no_grad():  # non-zero adapters, so no coefficient short-cut applies
        for b in lora.conditioned.lora_B.parameters():
            b.normal_(0, 1e-3)
    experts = [lora.export_expert(i, folder / name) for i, name in enumerate(OBJECTIVES)]
    soup = Soup.create(OBJECTIVES, DEFAULT_MODEL, "lora")
    soup.conditioned.load_state_dict(lora.conditioned.state_dict())
    mix = [0.3, 0.7]
    return {
        "plain": (Plain(Expert(DEFAULT_MODEL)), [1.0]),
        "clp-lora": (lora.without_reference(), mix),
        "clp-lora+ref": (lora, mix),
        "clp-logit": (CLP.create(OBJECTIVES, DEFAULT_MODEL, "logit").without_reference(), mix),
        "soup": (soup.without_reference(), mix),
        "prompted": (Prompted.create(OBJECTIVES, DEFAULT_MODEL, "lora").without_reference(), mix),
        "dera": (DeRa(experts[1], Expert(DEFAULT_MODEL)), [0.8]),
        "mod-2": (MOD(experts, Expert(DEFAULT_MODEL)), mix),
    }


def seconds(policy, prompts: list[str], weights: list[float], tokens: int, repeats: int) -> float:
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    policy.generate(prompts, weights, config=config)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.generate(prompts, weights, config=config)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        methods = build(Path(tmp))
        print(f"{args.tokens} tokens per prompt, greedy, best of {args.repeats}; {torch.get_num_threads()} threads")
        for batch in args.batches:
            prompts = [f"Tell me about {t}." for t in (TOPICS * 4)[:batch]]
            times = {name: seconds(p, prompts, w, args.tokens, args.repeats) for name, (p, w) in methods.items()}
            print(f"\nbatch {batch}")
            print(f"{'method':<14}{'ms/token':>10}{'tokens/s':>10}{'latency x plain':>17}{'x dera':>8}")
            for name, t in times.items():
                per_token = t / args.tokens * 1000
                print(f"{name:<14}{per_token:>10.1f}{batch * args.tokens / t:>10.1f}{t / times['plain']:>17.2f}"
                      f"{t / times['dera']:>8.2f}")


if __name__ == "__main__":
    main()
