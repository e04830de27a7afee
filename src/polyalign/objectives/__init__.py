"""Objectives: named reward functions, scored in batches, composed into an ordered set.

>>> objectives = build(["sentiment", "length:target=30,name=length30", "rouge:range=0.19..0.29"])
>>> scores = objectives.score(prompts, responses, references)   # float32 [N, 3], columns in objectives.names
"""

from polyalign.objectives.base import Objective, ObjectiveSet, check_scores
from polyalign.objectives.normalize import LinearRange, Normalized, Normalizer, normalize_scores
from polyalign.objectives.spec import available, build, parameters, parse_spec, register

__all__ = [
    "LinearRange", "Normalized", "Normalizer", "Objective", "ObjectiveSet", "available", "build",
    "check_scores", "normalize_scores", "parameters", "parse_spec", "register",
]
