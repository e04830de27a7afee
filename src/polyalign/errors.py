"""Exceptions a user can act on.

Every error raised at polyalign's boundary (weights, divergences, paths, tokenizers, configs, requests)
is a :class:`PolyalignError` whose message says what was wrong and how to fix it. The CLI prints it as
one line and exits non-zero; the server answers 4xx with it as a JSON body.
"""

from __future__ import annotations


class PolyalignError(ValueError):
    """Base class: bad input that the user can fix."""


class WeightsError(PolyalignError):
    """Weights of the wrong length, non-finite, all zero, or outside the method's domain."""


class DivergenceError(PolyalignError):
    """Unknown divergence, or one that the method cannot use (e.g. non-barrier f for MOD)."""


class ModelLoadError(PolyalignError):
    """A model, adapter or tokenizer could not be found or loaded."""


class TokenizerMismatchError(PolyalignError):
    """Experts whose tokenizers disagree on the shared token id range."""


class ConfigError(PolyalignError):
    """A configuration value (decoding options, prompts, specs) that is invalid."""


class FileError(ConfigError):
    """A file or folder the user named that cannot be read or written as given (missing, a directory where a
    file belongs, not UTF-8 text, under a file, not writable)."""


class ObjectiveError(PolyalignError):
    """An objective spec or a reward function output that is invalid."""
