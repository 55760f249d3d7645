"""``python -m lightning_xai.cli``: the same as the ``lightning-xai`` command."""

from lightning_xai.cli import main

main()
