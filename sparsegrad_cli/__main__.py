"""``python -m sparsegrad_cli ...``: the ``sparsegrad`` command."""

from .app import main

main()
