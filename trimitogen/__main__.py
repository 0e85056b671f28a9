"""``python -m trimitogen``: the same command as the ``trimitogen`` console script."""

from trimitogen.cli import main

raise SystemExit(main())
