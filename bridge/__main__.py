"""``python -m bridge``: the command line (serve, check, demo …)."""

import sys

from bridge.app.cli import main

sys.exit(main())
