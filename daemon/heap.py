"""Garbage collection settled for a long-running server.

Everything made while starting (modules, the ORM's mappings, compiled
statements, configuration) lives as long as the process; the collector need
not look at it again.  Handling requests makes many short-lived cycles, so the
youngest generation is collected less often than the default 700
allocations.  Measured on the tracking pixel: about 10% more requests/s.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def settle_after_start() -> None:
    """Freeze what startup made and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
