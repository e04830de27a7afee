"""polyalign: steer a language model across several objectives at inference time."""

from polyalign import divergences
from polyalign.combine import combine_logprobs
from polyalign.errors import PolyalignError
from polyalign.interface import Generation, GenerationConfig, SteerablePolicy

__version__ = "0.1.0"
__all__ = ["Generation", "GenerationConfig", "PolyalignError", "SteerablePolicy", "__version__", "combine_logprobs",
           "divergences"]
