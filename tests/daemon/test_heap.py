"""The daemon settles the garbage collector once it serves."""

from __future__ import annotations

import gc

from daemon.heap import YOUNG_THRESHOLD, settle_after_start


def test_startup_objects_are_frozen_and_young_collections_rarer() -> None:
    before = gc.get_threshold()
    try:
        settle_after_start()
        assert gc.get_freeze_count() > 1000  # the modules and mappings made while starting
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
