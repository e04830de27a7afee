"""polyalign: steer a language model across several objectives at inference time."""

from polyalign import divergences
from polyalign.combine import combine_logprobs
from polyalign.errors import PolyalignError
from polyalign.interface import Generation, GenerationConfig, SteerablePolicy

__version__ = "0.1.0"
__all__ = ["CLP", "MOD", "DeRa", "Expert", "Generation", "GenerationConfig", "Plain", "PolyalignError",
           "SteerablePolicy", "__version__", "combine_logprobs", "divergences", "load"]

_LAZY = {"CLP": "polyalign.policies", "MOD": "polyalign.policies", "DeRa": "polyalign.policies",
         "Plain": "polyalign.policies", "Expert": "polyalign.experts",
         "load": "polyalign.checkpoint"}  # these import transformers: load on use


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polyalign' has no attribute {name!r}")
