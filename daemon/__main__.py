"""``python -m daemon`` is the ``rapport`` command."""

import sys

from daemon.cli import main

sys.exit(main())
