"""``python -m polyalign.cli`` (and ``accelerate launch -m polyalign.cli train ...``)."""

from polyalign.cli import main

main()
