"""Preference pairs (prompt, chosen, rejected) for f-DPO experts: read from files or datasets, or made from
objectives.

A source is one of

- a ``.jsonl``, ``.json`` (a list of objects) or ``.csv`` file with ``prompt``, ``chosen`` and ``rejected``;
- ``hf:DATASET[:SPLIT][,prompt=COL][,chosen=COL][,rejected=COL][,config=NAME]``: a Hugging Face dataset by hub id
  or local folder (needs the optional ``datasets`` library).

Each field is plain text or chat messages (``[{"role": ..., "content": ...}]``): a prompt given as messages is
rendered with the model's chat template when training; a response given as messages is its last message's text.
Without a prompt column, chosen and rejected may be whole conversations that share every message but the last
(the Anthropic HH layout); the shared messages are the prompt.

Pairs can also be **generated** from any objective or weighted set of objectives (:func:`generate_preferences`):
sample k responses per prompt from the reference, score them, pair the best against the worst. Deterministic under
a seed; prompts whose best and worst responses score the same (ties) or are the same text (identical) are
dropped and counted.

Every problem with a source is a :class:`~polyalign.errors.ConfigError` naming the file, the row and the fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from polyalign.errors import ConfigError

Messages = list[dict[str, str]]
FIELDS = ("prompt", "chosen", "rejected")
FILE_SUFFIXES = (".jsonl", ".json", ".csv")
SOURCE_FORMS = "a .jsonl/.json/.csv file with prompt, chosen and rejected, or hf:DATASET[:SPLIT]"


@dataclass(frozen=True)
class PreferencePair:
    """One preference: ``chosen`` is preferred to ``rejected`` as an answer to ``prompt`` (text or messages)."""

    prompt: str | tuple[tuple[tuple[str, str], ...], ...]
    chosen: str
    rejected: str

    @property
    def messages(self) -> Messages | None:
        """The prompt as chat messages, or None for a plain-text prompt."""
        return None if isinstance(self.prompt, str) else [dict(m) for m in self.prompt]

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt if isinstance(self.prompt, str) else self.messages, "chosen": self.chosen,
                "rejected": self.rejected}


@dataclass
class PreferenceStats:
    """What :func:`pair_best_worst` kept and dropped."""

    prompts: int
    pairs: int
    ties: int
    """Prompts dropped because their best and worst responses scored the same."""
    identical: int
    """Prompts dropped because their best and worst responses were the same text."""

    def summary(self) -> str:
        return (f"{self.pairs} pairs from {self.prompts} prompts ({self.ties} ties and {self.identical} identical "
                "responses dropped)")


# -- reading --------------------------------------------------------------------------------------------------


def load_preferences(source: str | Path, *, limit: int | None = None) -> list[PreferencePair]:
    """The pairs of ``source`` (a file or ``hf:...``, see the module docstring), the first ``limit`` of them.

    Raises:
        ConfigError: an unreadable source, a missing column, an empty prompt or response, a pair whose chosen and
            rejected responses are the same, or no pairs at all.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"preference limit must be a positive whole number, got {limit!r}")
    where = str(source).strip()
    if not where:
        raise ConfigError(f"the preference source is empty; give {SOURCE_FORMS}")
    if isinstance(source, str) and where.startswith("hf:"):
        rows, columns = _hf_rows(where, limit)
    else:
        rows, columns = _file_rows(Path(where).expanduser()), dict(zip(FIELDS, FIELDS, strict=True))
    if limit is not None:
        rows = rows[:limit]
    return check_pairs(rows, where, columns)


def check_pairs(rows: Sequence[Any], where: str, columns: dict[str, str] | None = None) -> list[PreferencePair]:
    """Rows (mappings) as checked :class:`PreferencePair` s; ``columns`` maps prompt/chosen/rejected to column names."""
    columns = columns or dict(zip(FIELDS, FIELDS, strict=True))
    if not rows:
        raise ConfigError(f"preference source {where!r} holds no pairs")
    return [_pair(row, i, where, columns) for i, row in enumerate(rows)]


def _pair(row: Any, i: int, where: str, columns: dict[str, str]) -> PreferencePair:
    at = f"preference source {where!r}, row {i}"
    if not isinstance(row, dict):
        raise ConfigError(f"{at}: expected an object with {', '.join(columns.values())}, got {type(row).__name__}")
    need = [columns["chosen"], columns["rejected"]] + ([columns["prompt"]] if columns["prompt"] in row
                                                        or not _is_messages(row.get(columns["chosen"])) else [])
    missing = [c for c in need if c not in row or row[c] is None]
    if missing:
        raise ConfigError(f"{at}: missing column(s) {', '.join(repr(c) for c in missing)}; every row needs "
                          f"{', '.join(repr(c) for c in columns.values())} (text or chat messages)")
    chosen, rejected = row[columns["chosen"]], row[columns["rejected"]]
    if columns["prompt"] in row:
        prompt = _prompt(row[columns["prompt"]], at)
    else:  # whole conversations: the shared messages are the prompt
        prompt = _shared_prefix(chosen, rejected, at)
    pair = PreferencePair(prompt, _response(chosen, "chosen", at), _response(rejected, "rejected", at))
    if pair.chosen.strip() == pair.rejected.strip():
        raise ConfigError(f"{at}: chosen and rejected are the same response; a preference needs two different "
                          "responses (drop the row)")
    return pair


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value) and bool(value)


def _prompt(value: Any, at: str) -> str | tuple:
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{at}: the prompt is empty; every pair needs a prompt")
        return value
    if _is_messages(value):
        messages = tuple(tuple((str(k), str(v)) for k, v in sorted(m.items()) if k in ("role", "content"))
                         for m in value)
        if not any(dict(m).get("content", "").strip() for m in messages):
            raise ConfigError(f"{at}: the prompt's messages are all empty")
        return messages
    raise ConfigError(f"{at}: the prompt must be text or a list of chat messages ({{'role', 'content'}}), got "
                      f"{type(value).__name__}")


def _response(value: Any, which: str, at: str) -> str:
    if _is_messages(value):
        value = value[-1]["content"]
    if not isinstance(value, str):
        raise ConfigError(f"{at}: the {which} response must be text or chat messages, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(f"{at}: the {which} response is empty")
    return value


def _shared_prefix(chosen: Any, rejected: Any, at: str) -> tuple:
    if not (_is_messages(chosen) and _is_messages(rejected)):
        raise ConfigError(f"{at}: missing column 'prompt' (needed unless chosen and rejected are conversations)")
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        raise ConfigError(f"{at}: without a 'prompt' column, chosen and rejected must be conversations that share "
                          "every message but the last")
    return _prompt(chosen[:-1], at)  # type: ignore[return-value]


def _file_rows(path: Path) -> list[Any]:
    from polyalign.files import read_text

    if path.suffix not in FILE_SUFFIXES:
        raise ConfigError(f"preference file {str(path)!r} must end in {', '.join(FILE_SUFFIXES)}; or give "
                          "hf:DATASET for a Hugging Face dataset")
    text = read_text(path, "preference file")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if path.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ConfigError(f"preference file {str(path)!r} must hold a JSON list of pairs")
            return rows
    except json.JSONDecodeError as exc:
        raise ConfigError(f"preference file {str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"preference file {str(path)!r}: missing column(s) {', '.join(repr(c) for c in missing)} "
                          f"in the header (it has {reader.fieldnames or 'none'}); a CSV needs prompt,chosen,rejected")
    return [{k: _maybe_messages(v) for k, v in row.items() if k in FIELDS} for row in reader]


def _maybe_messages(cell: str | None) -> Any:
    """A CSV cell holding a JSON list of messages is read as messages; anything else stays text."""
    if cell and cell.lstrip().startswith("[{"):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        return value if _is_messages(value) else cell
    return cell


def _hf_rows(spec: str, limit: int | None) -> tuple[list[Any], dict[str, str]]:
    from polyalign.prompts import load_hf_split

    head, *options = spec[len("hf:"):].split(",")
    columns, config = dict(zip(FIELDS, FIELDS, strict=True)), None
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        if key not in (*FIELDS, "config") or not eq or not value:
            raise ConfigError(f"preference source {spec!r}: bad option {option.strip()!r}; the options are "
                              "prompt=COL, chosen=COL, rejected=COL and config=NAME")
        if key == "config":
            config = value
        else:
            columns[key] = value
    name, _, split = head.partition(":")
    name, split = name.strip(), split.strip() or "train"
    if not name:
        raise ConfigError(f"preference source {spec!r} names no dataset; write hf:DATASET[:SPLIT]")
    data, what = load_hf_split(name, split, config, spec, "preference")
    present = list(data.column_names)
    # without the default prompt column, rows must be whole conversations (checked per row)
    wanted = [columns["chosen"], columns["rejected"]] + ([columns["prompt"]] if columns["prompt"] != "prompt" else [])
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(f"{what} has no column(s) {', '.join(repr(c) for c in missing)}; its columns are "
                          f"{', '.join(present)}; map them with ,prompt=COL,chosen=COL,rejected=COL")
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return [dict(row) for row in data], columns


def write_preferences(path: str | Path, pairs: Sequence[PreferencePair], scores: torch.Tensor | None = None
                      ) -> Path:
    """Pairs as JSONL (with ``chosen_score``/``rejected_score`` when ``scores [N, 2]`` is given)."""
    from polyalign.files import write_text

    lines = []
    for i, pair in enumerate(pairs):
        row = pair.to_json()
        if scores is not None:
            row |= {"chosen_score": float(scores[i, 0]), "rejected_score": float(scores[i, 1])}
        lines.append(json.dumps(row, ensure_ascii=False))
    return write_text(path, "".join(line + "\n" for line in lines), "preference file")


# -- generating -----------------------------------------------------------------------------------------------


def sample_responses(policy, prompts: Sequence[str], k: int, *, seed: int = 0, generation=None) -> list[list[str]]:
    """``k`` sampled responses per prompt from ``policy`` (any SteerablePolicy; the reference), deterministic
    under ``seed`` (each row is seeded from (seed, prompt, sample), so a row samples the same in any batch)."""
    from polyalign.interface import GenerationConfig

    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"k (responses per prompt) must be a whole number of at least 2, got {k!r}")
    config = (generation or GenerationConfig(max_new_tokens=64)).model_copy(
        update={"strategy": "sample", "n": k, "seed": seed})
    weights = [1.0 / len(policy.objectives)] * len(policy.objectives)
    gens = policy.generate(list(prompts), weights, config=config)
    out: list[list[str]] = [[""] * k for _ in prompts]
    for index, gen in enumerate(gens):  # prompt-major, n per prompt
        out[index // k][gen.sample_index] = gen.text
    return out


def scalarised_scores(objectives, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                      weights: Sequence[float] | None = None) -> torch.Tensor:
    """``R(x, y) . w`` of every response ``[P, k]`` (equal weights by default), from ``objectives.score``."""
    k = len(responses[0])
    rows = [p for p in prompts for _ in range(k)]
    scores = objectives.score(rows, [r for per in responses for r in per]).double()
    m = scores.shape[1]
    w = torch.full((m,), 1.0 / m, dtype=torch.float64) if weights is None else \
        torch.as_tensor(list(weights), dtype=torch.float64)
    if w.shape != (m,) or not bool(torch.isfinite(w).all()):
        raise ConfigError(f"preference weights must be {m} finite numbers, one per objective {list(objectives.names)}"
                          f"; got {list(weights or [])}")
    return (scores @ w).reshape(len(prompts), k)


def pair_best_worst(prompts: Sequence[str], responses: Sequence[Sequence[str]], scores: torch.Tensor
                    ) -> tuple[list[PreferencePair], torch.Tensor, PreferenceStats]:
    """For each prompt, its best response (the first of the highest scores) against its worst (the first of the
    lowest); prompts whose responses all read the same (identical) or whose best and worst score the same (ties)
    are dropped.

    Returns the pairs, their scores ``[N, 2]`` (chosen, rejected) and the counts.
    """
    pairs, kept, ties, identical = [], [], 0, 0
    for prompt, texts, row in zip(prompts, responses, scores, strict=True):
        best, worst = int(torch.argmax(row)), int(torch.argmin(row))
        if len({t.strip() for t in texts}) == 1:
            identical += 1
        elif not bool(row[best] > row[worst]):
            ties += 1
        elif texts[best].strip() == texts[worst].strip():  # a noisy objective scored one text twice
            identical += 1
        else:
            pairs.append(PreferencePair(prompt, texts[best], texts[worst]))
            kept.append([float(row[best]), float(row[worst])])
    stats = PreferenceStats(len(prompts), len(pairs), ties, identical)
    return pairs, torch.tensor(kept, dtype=torch.float64).reshape(-1, 2), stats


def generate_preferences(policy, prompts: Sequence[str], objectives, weights: Sequence[float] | None = None, *,
                         k: int = 4, seed: int = 0, generation=None
                         ) -> tuple[list[PreferencePair], torch.Tensor, PreferenceStats]:
    """Preference pairs from a reward function and no labels: ``k`` samples per prompt from ``policy`` (the
    reference), scored by ``objectives`` (:func:`polyalign.objectives.build`) weighted by ``weights``, best against
    worst (:func:`pair_best_worst`). Deterministic under ``seed``."""
    responses = sample_responses(policy, prompts, k, seed=seed, generation=generation)
    scores = scalarised_scores(objectives, prompts, responses, weights)
    pairs, kept, stats = pair_best_worst(prompts, responses, scores)
    if not pairs:
        raise ConfigError(f"no preference pairs: {stats.summary()}; sample more responses per prompt (k), use more "
                          "prompts, or an objective that tells the responses apart")
    return pairs, kept, stats


def stats_json(stats: PreferenceStats) -> dict[str, int]:
    return asdict(stats)
