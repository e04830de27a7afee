"""The objective protocol, output validation and the ordered :class:`ObjectiveSet`.

An objective scores a batch of (prompt, response, optional reference) into one float per response.
The order of an :class:`ObjectiveSet` is the order of the weight vector everywhere in polyalign.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

from polyalign.errors import ObjectiveError


@runtime_checkable
class Objective(Protocol):
    """A named reward: ``score`` returns float32 ``[N]`` on the CPU, one value per response."""

    name: str
    higher_is_better: bool

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], references: Sequence[str] | None = None
    ) -> torch.Tensor: ...


class RowError(ObjectiveError):
    """An error about one input row; ``template`` has ``{row}`` so a batch's row can become the caller's row."""

    def __init__(self, template: str, row: int):
        self.template, self.row = template, row
        super().__init__(template.format(row=row))

    def shifted(self, offset: int) -> RowError:
        return RowError(self.template, self.row + offset)


def check_scores(name: str, values: object, n: int, source: str | None = None) -> torch.Tensor:
    """Validate an objective's output: ``n`` finite numbers, returned as contiguous float32 ``[n]`` on the CPU.

    ``source`` (e.g. the spec and the user function) is appended to the error message.
    """
    where = f" ({source})" if source else ""
    try:
        scores = torch.as_tensor(values).detach().to("cpu", torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ObjectiveError(
            f"objective {name!r} returned {type(values).__name__}, not a sequence of numbers ({exc}){where}"
        ) from None
    if scores.shape != (n,):
        raise ObjectiveError(
            f"objective {name!r} returned shape {tuple(scores.shape)}; expected ({n},): one score per response{where}"
        )
    bad = (~torch.isfinite(scores)).nonzero()
    if len(bad):
        row = int(bad[0])
        escaped = where.replace("{", "{{").replace("}", "}}")
        raise RowError(f"objective {name!r} returned {scores[row].item()} for row {{row}}; scores must be finite"
                       f"{escaped}", row)
    return scores.contiguous()


def check_inputs(
    prompts: Sequence[str], responses: Sequence[str], references: Sequence[str | None] | None
) -> None:
    """Same lengths, strings only: reject at the boundary what every objective would trip over."""
    if len(prompts) != len(responses):
        raise ObjectiveError(f"got {len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
    if references is not None and len(references) != len(responses):
        raise ObjectiveError(f"got {len(references)} references for {len(responses)} responses; give one per response")
    for kind, texts in (("prompt", prompts), ("response", responses), ("reference", references or ())):
        for row, text in enumerate(texts):
            if not isinstance(text, str) and not (kind == "reference" and text is None):
                raise RowError(f"{kind} in row {{row}} is {type(text).__name__}, not a string", row)


class ObjectiveSet:
    """Ordered objectives with unique names; their order is the weight order."""

    def __init__(self, objectives: Sequence[Objective]):
        if not objectives:
            raise ObjectiveError("an objective set needs at least one objective")
        names = [objective.name for objective in objectives]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ObjectiveError(
                    f"objective name {name!r} appears twice; give one of them another name, e.g. '...,name={name}2'"
                )
            seen.add(name)
        self.objectives = list(objectives)
        self.names = names

    def __len__(self) -> int:
        return len(self.objectives)

    def __iter__(self) -> Iterator[Objective]:
        return iter(self.objectives)

    def __getitem__(self, key: int | str) -> Objective:
        if isinstance(key, str):
            if key not in self.names:
                raise ObjectiveError(f"no objective named {key!r}; this set has {', '.join(self.names)}")
            key = self.names.index(key)
        return self.objectives[key]

    def __repr__(self) -> str:
        return f"ObjectiveSet({self.names})"

    @property
    def higher_is_better(self) -> list[bool]:
        return [objective.higher_is_better for objective in self.objectives]

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | None] | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> torch.Tensor:
        """Score every response under every objective: float32 ``[N, M]``, columns in :attr:`names` order."""
        if batch_size < 1:
            raise ObjectiveError(f"batch_size must be at least 1, got {batch_size}")
        check_inputs(prompts, responses, references)
        n = len(responses)
        columns: list[list[torch.Tensor]] = [[] for _ in self.objectives]
        with _progress_bar(n, progress) as advance:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch_refs = None if references is None else list(references[start:stop])
                for column, objective in zip(columns, self.objectives, strict=True):
                    try:
                        raw = objective.score(list(prompts[start:stop]), list(responses[start:stop]), batch_refs)
                        column.append(check_scores(objective.name, raw, stop - start))
                    except RowError as exc:  # keep the user's exception, if any, for debugging
                        raise exc.shifted(start) from exc.__cause__
                advance(stop - start)
        if n == 0:
            return torch.empty(0, len(self), dtype=torch.float32)
        return torch.stack([torch.cat(column) for column in columns], dim=1)

    def to_spec(self) -> list[str]:
        """The specs that :func:`polyalign.objectives.build` turns back into this set."""
        specs = []
        for objective in self.objectives:
            spec = getattr(objective, "spec", None)
            if spec is None:
                raise ObjectiveError(
                    f"objective {objective.name!r} was built in code, not from a spec, so it has no spec to write; "
                    "build it with polyalign.objectives.parse_spec or set its .spec attribute"
                )
            specs.append(spec)
        return specs


class _progress_bar:
    """A rich progress bar on stderr, or nothing; yields ``advance(k)``."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self):
        if not self.enabled:
            return lambda k: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.bar.start()
        task = self.bar.add_task("scoring", total=self.total)
        return lambda k: self.bar.advance(task, k)

    def __exit__(self, exc_type, *exc) -> None:
        if self.bar is None:
            return
        if exc_type is None:
            self.bar.stop()
        else:  # no half-done bar (nor Progress.stop's blank line) above the one error line
            self.bar.live.transient = True
            self.bar.live.stop()
