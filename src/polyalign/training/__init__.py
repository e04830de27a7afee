"""Training for every trained method, on accelerate (DESIGN.md, "Training"): CLP's multi-task RL (Algorithm 1)
today. A run is a :class:`TrainConfig`; :func:`train` runs or resumes it; :mod:`polyalign.training.run` holds
the run conventions (folder, metrics, checkpoints, resume) and :mod:`polyalign.training.estimators` the maths."""

from polyalign.training.config import TrainConfig, load_train_config, parse_train_config
from polyalign.training.recipe import draw_weighting, train

__all__ = ["TrainConfig", "draw_weighting", "load_train_config", "parse_train_config", "train"]
