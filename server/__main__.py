"""`python -m server` is the same as the `twofour` command."""

from server.cli import main

raise SystemExit(main())
