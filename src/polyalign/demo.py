"""``polyalign demo``: persona MOD on the embedded default model, swept over weightings, scored and plotted.

Two persona experts on one model pull in opposite directions (terse and dry vs long and warm). MOD
combines them at 7 weightings, including the extrapolations (1.5, -0.5) and (-0.5, 1.5) that only
reverse KL allows; every response is scored by two offline objectives that match the personas
(``concise``: minus the word count; ``sentiment``: VADER compound). The sweep, the scoring, the
indicators and the files are the evaluation package's, the same code ``polyalign evaluate`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from polyalign.evaluation import SweepResult, run_sweep, write_outputs
from polyalign.evaluation.indicators import steerability
from polyalign.files import check_output_dir
from polyalign.interface import GenerationConfig, check_prompts
from polyalign.models import DEFAULT_MODEL, check_spec
from polyalign.objectives import build
from polyalign.policies import MOD

PERSONAS = {
    "concise": "You are a blunt, dry, matter-of-fact assistant. Answer in one short plain sentence, no pleasantries.",
    "warm": "You are a cheerful, loving assistant. You adore everything and say how wonderful, happy and delightful "
            "it all is! Write long, warm, enthusiastic answers.",
}
OBJECTIVES = ["concise", "sentiment"]  # in persona order: w_i steers objective i
WEIGHTINGS = [(1.5, -0.5), (1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0), (-0.5, 1.5)]
PROMPTS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Describe a rainy Monday morning.",
    "What do you think of homework?",
    "Tell me about your weekend plans.",
    "How do plants grow?",
    "Write a note to a coworker about a missed deadline.",
    "What is the best way to learn to cook?",
]
EXAMPLE = 2  # the prompt whose response the table shows (the last one when fewer are given)


@dataclass
class DemoResult:
    run_dir: Path
    sweep: SweepResult
    files: dict[str, Path]


def run_demo(
    out_dir: str | Path = "runs",
    model: str = DEFAULT_MODEL,
    max_new_tokens: int = 48,
    prompts: list[str] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> DemoResult:
    """Run the sweep, print the table and write results.json, results.csv, the plots and report.html."""
    console = console or Console()
    check_output_dir(out_dir, "demo output folder (--out)")  # before a minute of work, not after it
    check_prompts(prompts or PROMPTS)
    check_spec(model)
    with console.status(f"loading {model} (the first run converts the embedded GGUF once, about 20 s)"):
        policy = MOD.from_personas(PERSONAS, model=model, objectives=OBJECTIVES)  # reference: the default prompt
        objectives = build(OBJECTIVES)
    sweep = run_sweep(policy, prompts or PROMPTS, WEIGHTINGS, objectives, progress=progress, name="MOD personas",
                      config=GenerationConfig(max_new_tokens=max_new_tokens))
    run_dir = Path(out_dir) / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    files = write_outputs(sweep, run_dir)
    console.print(table(sweep))
    rhos = steerability([p.weights for p in sweep.points], [p.mean for p in sweep.points])
    for (rho, _), persona, objective in zip(rhos, PERSONAS, OBJECTIVES, strict=True):
        if rho is not None:
            console.print(f"steerability: Spearman(w_{persona}, {objective}) = {rho:+.2f}")
    console.print(f"results: {files['json']}\nPareto plot: {files['pareto']}\nreport: {files['html']}")
    return DemoResult(run_dir, sweep, files)


def table(sweep: SweepResult) -> Table:
    """Averages per weighting with one example response."""
    t = Table(title=f"MOD with persona experts {list(PERSONAS)}: averages over {len(sweep.points[0].responses)} "
                    "prompts")
    t.add_column("w (concise, warm)")
    t.add_column("words", justify="right")
    t.add_column("sentiment", justify="right")
    t.add_column("KL", justify="right")
    t.add_column("example response", max_width=70)
    for p in sweep.points:
        example = p.responses[min(EXAMPLE, len(p.responses) - 1)].text.strip().replace("\n", " ")
        kl = f"{p.kl:.1f}" if p.kl is not None else "-"
        t.add_row(f"({p.weights[0]:g}, {p.weights[1]:g})", f"{-p.mean[0]:.1f}", f"{p.mean[1]:+.2f}", kl,
                  example[:140] + ("…" if len(example) > 140 else ""))
    return t
