"""Per-call cost of ``combine_logprobs`` on one decoding step: batch 16 over SmolLM2's 49152-token vocabulary.

Prints milliseconds per call (wall clock, and process CPU time, which a busy machine disturbs less) for every
barrier divergence with M = 2 and 3 experts, and the ratio to the reverse-KL closed form measured in the same
run (ratios are what to compare across machines).

    python benchmarks/combine.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from polyalign.combine import combine_logprobs

DIVERGENCES = ["reverse_kl", "forward_kl", "jsd", "alpha:0.5", "jeffrey"]
WEIGHTS = {2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}


def _call(args: tuple, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds for one ``combine_logprobs(*args)`` (CPU time is steadier on a busy box)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    combine_logprobs(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default); 1 is steadier "
                        "when other processes share the CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)

    def logprobs(*shape: int) -> torch.Tensor:  # LM-like spread: a few likely tokens, a long tail
        return torch.log_softmax(torch.randn(*shape, generator=gen) * 3, dim=-1).to(device, dtype)

    reference = logprobs(args.batch, args.vocab)
    print(f"combine_logprobs on [{args.batch}, {args.vocab}] {args.dtype} on {device}, "
          f"median of {args.repeats} round-robin calls, {torch.get_num_threads()} CPU threads")
    print(f"{'divergence':<12} {'M':>2} {'ms/call':>9} {'x reverse_kl':>13} {'cpu ms/call':>12} {'x reverse_kl':>13}")
    for n_experts, weights in WEIGHTS.items():
        experts = logprobs(n_experts, args.batch, args.vocab)
        calls = {name: (reference, experts, weights, name) for name in DIVERGENCES}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in DIVERGENCES}
        for name in DIVERGENCES:  # warm-up
            _call(calls[name], device)
        for _ in range(args.repeats):  # round-robin, so that a busy machine slows every divergence alike
            for name in DIVERGENCES:
                times[name].append(_call(calls[name], device))
        wall = {name: statistics.median(t[0] for t in times[name]) for name in DIVERGENCES}
        cpu = {name: statistics.median(t[1] for t in times[name]) for name in DIVERGENCES}
        for name in DIVERGENCES:
            print(f"{name:<12} {n_experts:>2} {wall[name] * 1e3:>9.2f} {wall[name] / wall['reverse_kl']:>13.2f} "
                  f"{cpu[name] * 1e3:>12.2f} {cpu[name] / cpu['reverse_kl']:>13.2f}")

if __name__ == "__main__":
    main()
