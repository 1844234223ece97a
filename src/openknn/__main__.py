"""``python -m openknn`` runs the command line."""

from .cli import main

main()
