"""``python -m audiotok`` runs the command line."""

from .cli.main import main

main()
