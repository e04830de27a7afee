"""The CLP paper's Section 6.2 counterexample, runnable: ``python examples/counterexample.py [--seeds N]``.

One context, three outputs, R1 = (1, 0, 0.75), R2 = (0, 1, 0.75), alpha = 0.03. Two whole-model experts trained
to optimality from one tiny Llama; their Rewarded Soup at w = (0.5, 0.5) (Eq. 3 over all parameters) misses
output 3, which the optimum and CLP (logit layer conditioned, body trained multi-task) choose. MOD is shown over
the trained experts and over the closed-form ones. See :mod:`polyalign.counterexample` for what does and does
not fail, and why.
"""

from __future__ import annotations

import argparse

import torch

from polyalign.counterexample import ALPHA, run

ROWS = (("optimum", "closed form pi_ref exp(w.R / beta) / Z"),
        ("soup", "Rewarded Soup: parameter average of the experts"),
        ("clp", "CLP, logit layer conditioned, trained multi-task"),
        ("mod", "MOD (reverse KL) over the trained experts"),
        ("mod_exact", "MOD (reverse KL) over the closed-form experts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the robustness lines (default 3)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"KL strength (default {ALPHA})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = run(0, alpha=args.alpha)
    gap = (result.experts.exp() - result.expert_optima.exp()).abs().max()
    print(f"alpha = {args.alpha}, w = (0.5, 0.5); pi_ref = {_fmt(result.reference.exp())}; "
          f"experts within {float(gap):.1e} of their closed-form optima (max |pi - pi*|)\n")
    print(f"{'method':<10} {'pi(y1)':>7} {'pi(y2)':>7} {'pi(y3)':>7} {'value':>7}  what")
    for name, what in ROWS:
        p = result.distributions[name]
        print(f"{name:<10} {p[0]:7.3f} {p[1]:7.3f} {p[2]:7.3f} {result.values[name]:7.3f}  {what}")
    print("\nvalue = (1 - alpha) E[w.R] - alpha KL(pi || pi_ref) (CLP Eq. 1)\n")
    print("pi(y3) across seeds:")
    for seed in range(args.seeds):
        r = result if seed == 0 else run(seed, alpha=args.alpha)
        print(f"  seed {seed}: " + ", ".join(f"{name} {r.distributions[name][2]:.3f}" for name, _ in ROWS))


def _fmt(p: torch.Tensor) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in p.tolist()) + ")"


if __name__ == "__main__":
    main()
