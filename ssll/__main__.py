"""``python -m ssll`` runs the command line."""

from ssll.cli import main

raise SystemExit(main())
