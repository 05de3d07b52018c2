"""``python -m caffezoo``: the same as the ``caffezoo`` command."""

from .cli import main

main()
