"""The engines' stall clock (engines.threaded.Progress), without a model: work that is answered at
once never counts as held, so an idle engine is never reported stalled."""
from __future__ import annotations

import time

from engines.threaded import Progress


def test_an_idle_engine_is_never_stalled():
    progress = Progress()
    assert progress.stalled_for() == 0.0


def test_a_request_cancelled_in_the_queue_leaves_an_idle_engine_idle():
    progress = Progress()
    progress.submitted()
    progress.taken(kept=False)  # answered `cancelled` at once, nothing held
    time.sleep(0.05)
    assert progress.stalled_for() == 0.0


def test_held_work_without_a_step_counts_until_the_next_step():
    progress = Progress()
    progress.submitted()
    progress.taken()
    time.sleep(0.05)
    assert progress.stalled_for() >= 0.05
    progress.stepped()
    assert progress.stalled_for() < 0.05
    progress.holding(False)
    assert progress.stalled_for() == 0.0
