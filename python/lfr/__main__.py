"""``python -m lfr``: the same as the ``lfr`` command."""

from lfr.cli import main

raise SystemExit(main())
