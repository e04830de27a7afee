"""Data files that ship with polyalign: ``prompts/train.txt`` and ``prompts/heldout.txt``, the built-in prompt
sets read by :func:`polyalign.prompts.builtin_prompts` (see ``prompts/README.md`` for their origin and licence)."""
