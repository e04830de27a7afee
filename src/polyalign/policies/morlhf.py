"""MORLHF: one model per fixed weighting, trained by the same trainer with ``w`` (and ``alpha``) held fixed.

A single-objective RL expert is the MORLHF model at ``w = e_i``. Several MORLHF models on one base model form a
front of discrete points; :class:`MORLHF` holds them as the copies of one conditioned model (one LoRA adapter or
parameter copy each) and gives every row the copy trained at its weighting, so a batch mixing weightings is still
one forward. A weighting no model was trained at is refused: MORLHF cannot answer it without retraining.

A one-copy LoRA checkpoint is also a peft adapter directory (``adapter_config.json``), so MOD and DeRa take a
trained expert as ``Expert(base, adapter=checkpoint)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polyalign import checkpoint as ckpt
from polyalign.conditioning import LoRAConditionedModel
from polyalign.errors import ConfigError, ModelLoadError, WeightsError
from polyalign.policies.clp import CLP, _save_peft_adapter, architecture, fresh, loader

KIND = "morlhf"
Point = tuple[tuple[float, ...], float]
"""A trained weighting and the alpha it was trained at."""

_TOL = 1e-6


class MORLHF(CLP):
    """Models trained at fixed weightings ``points`` (one copy each); ``generate(prompts, w)`` decodes each row with
    the model trained at its ``w``. ``alpha``: None, or the alpha those models were trained at."""

    kind = KIND
    alpha_meaning = "the KL strength the models were trained at (fixed per model); omit it"

    def __init__(self, *args: Any, points: Sequence[Sequence[Any]], **kwargs: Any) -> None:
        self.points: list[Point] = [(tuple(float(x) for x in w), float(a)) for w, a in points]
        super().__init__(*args, **kwargs)

    @classmethod
    def copy_names(cls, objectives: list[str], *, points: Sequence[Sequence[Any]], **options: Any) -> list[str]:
        if not points:
            raise ConfigError("MORLHF needs at least one trained weighting")
        for w, _ in points:
            if len(w) != len(objectives):
                raise ConfigError(f"MORLHF weighting {list(w)} has {len(w)} values for objectives {objectives}")
        return ["w=" + ",".join(f"{float(x):g}" for x in w) + f";alpha={float(a):g}" for w, a in points]

    @classmethod
    def options_from_meta(cls, meta: dict[str, Any], where: str) -> dict[str, Any]:
        if "points" not in meta:
            raise ModelLoadError(f"checkpoint {where}: policy.json lacks 'points' (the trained weightings)")
        return {"points": meta["points"]}

    @property
    def weightings(self) -> list[list[float]]:
        """The weightings it was trained at: the only ones it answers."""
        return [list(w) for w, _ in self.points]

    def head_weights(self, weights: torch.Tensor, alpha: float | None) -> torch.Tensor:
        """One-hot coefficients ``[B, K + 1]``: each row's model, found by its weighting."""
        out = torch.zeros(weights.shape[0], len(self.points) + 1, dtype=torch.float64)
        for row, w in enumerate(weights.double()):
            k = self._point_of(w, alpha)
            out[row, k] = 1.0
        return out

    def _point_of(self, w: torch.Tensor, alpha: float | None) -> int:
        for k, (point, trained_alpha) in enumerate(self.points):
            if torch.allclose(w, torch.tensor(point, dtype=torch.float64), atol=_TOL, rtol=0.0):
                if alpha is not None and abs(alpha - trained_alpha) > _TOL:
                    raise WeightsError(f"the MORLHF model at w={list(point)} was trained at alpha={trained_alpha:g}, "
                                       f"not {alpha:g}; it has no alpha knob (omit alpha)")
                return k
        raise WeightsError(f"MORLHF has models at weightings {self.weightings} only; w={w.tolist()} needs a model "
                           "trained at it (one run per weighting)")

    def meta(self) -> dict[str, Any]:
        return super().meta() | {"points": [[list(w), a] for w, a in self.points]}

    def write_to(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """The checkpoint; a one-copy LoRA model is also written as a peft adapter in the same folder."""
        super().write_to(folder, extra)
        if len(self.points) == 1 and isinstance(self.conditioned, LoRAConditionedModel):
            _save_peft_adapter(self.conditioned, 0, folder, self.loaded.name)

    @classmethod
    def assemble(cls, paths: Sequence[str | Path], *, model: str | None = None, **placement: Any) -> MORLHF:
        """One MORLHF policy over several trained MORLHF checkpoints (or run folders) on one base model."""
        folders, metas = read_points(paths)
        arch = same_architecture(folders, metas)
        points = [p for meta in metas for p in meta["points"]]
        seen: dict[tuple, Path] = {}
        for folder, meta in zip(folders, metas, strict=True):
            for w, _ in meta["points"]:
                if tuple(w) in seen:
                    raise ConfigError(f"checkpoints {str(seen[tuple(w)])!r} and {str(folder)!r} were both trained at "
                                      f"w={w}: keep one")
                seen[tuple(w)] = folder
        policy = fresh(cls, arch, model=model, points=points, **placement)
        load_copies(policy, folders, metas, model or arch["base_model"])
        return policy


def expand_runs(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Checkpoint paths from: checkpoints, run folders, or experts runs (their ``experts/*`` runs)."""
    out: list[Path] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        folder = Path(p).expanduser()
        if (folder / "experts").is_dir():
            out += sorted(d for d in (folder / "experts").iterdir() if d.is_dir())
        else:
            out.append(folder)
    return out


def objectives_of(paths: Sequence[str | Path]) -> list[str]:
    """The objectives the first of these checkpoints was trained for (what its weights are named after)."""
    return list(ckpt.read_meta(ckpt.resolve(expand_runs(paths)[0]))["objectives"])


def read_points(paths: Sequence[str | Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Resolved checkpoint folders (:func:`expand_runs`) and their ``policy.json``; each must be a MORLHF
    checkpoint."""
    folders = [ckpt.resolve(p) for p in expand_runs(paths)]
    if not folders:
        raise ConfigError("give at least one checkpoint")
    metas = [ckpt.read_meta(f) for f in folders]
    for folder, meta in zip(folders, metas, strict=True):
        if meta.get("kind") != KIND:
            raise ConfigError(f"{str(folder)!r} holds a {meta.get('kind')!r} checkpoint, not a fixed-weighting one "
                              f"({KIND}: what `polyalign train` writes for policy.kind morlhf or experts)")
    return folders, metas


def same_architecture(folders: list[Path], metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The shared architecture of several checkpoints; refuse ones that differ (objectives, selector, shapes)."""
    archs = [architecture(m, repr(str(f))) | {"rank": m.get("rank"), "lora_alpha": m.get("lora_alpha")}
             for f, m in zip(folders, metas, strict=True)]
    for key in ("objectives", "selector", "f_mix", "alpha_min", "rank", "lora_alpha"):
        values = {repr(a[key]) for a in archs}
        if len(values) > 1:
            raise ConfigError(f"these checkpoints differ in {key} ({', '.join(sorted(values))}): models to combine "
                              "must share a base model and an architecture")
    fingerprints = {repr(m.get("base_fingerprint")) for m in metas}
    if len(fingerprints) > 1:
        raise ConfigError("these checkpoints were trained on different base weights (their base fingerprints "
                          "differ): models to combine must share one base model")
    return architecture(metas[0], repr(str(folders[0])))


def load_copies(policy: CLP, folders: list[Path], metas: list[dict[str, Any]], base: str) -> None:
    """Copy the copies of one-or-more-copy checkpoints into ``policy``'s copies, in order."""
    tensors: dict[str, torch.Tensor] = {}
    k = 0
    for folder, meta in zip(folders, metas, strict=True):
        where = repr(str(folder))
        if "base_fingerprint" in meta:
            ckpt.check_fingerprint(meta["base_fingerprint"], policy.conditioned.model, where, base)
        n = len(meta.get("copies", meta["objectives"]))
        for name, value in ckpt.load_tensors(folder / ckpt.WEIGHTS_FILE, "checkpoint weights").items():
            attr, i, rest = name.split(".", 2)
            tensors[f"{attr}.{k + int(i)}.{rest}"] = value
        k += n
    policy.load_trainable(tensors, ", ".join(repr(str(f)) for f in folders))


ckpt.register_loader(KIND, loader(MORLHF))
