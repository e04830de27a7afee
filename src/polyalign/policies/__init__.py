"""Steerable policies: every method behind the one :class:`~polyalign.interface.SteerablePolicy` interface, one
file each, all decoded by :mod:`polyalign.decode`. Typed configs that build them: :mod:`polyalign.policies.config`."""

from polyalign.policies.base import EnginePolicy, SequenceLogprobs, sequence_logprobs
from polyalign.policies.clp import CLP
from polyalign.policies.dera import DeRa
from polyalign.policies.mod import MOD
from polyalign.policies.plain import Plain

__all__ = ["CLP", "MOD", "DeRa", "EnginePolicy", "Plain", "SequenceLogprobs", "sequence_logprobs"]
