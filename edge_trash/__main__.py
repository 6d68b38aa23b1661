"""``python -m edge_trash`` runs the ``edge-trash`` command line."""

from edge_trash.cli import main

main()
