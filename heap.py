"""The garbage collector's view of a long-running process: what its start-up built is set aside.

A worker that has loaded its engine tracks some 260,000 objects (Celery, kombu, the engine and its
tokenizer), and each full collection walked them all with the GIL held: 160-177 ms measured in the
tier workers while clients waited (docs/benchmarks.md). The engine thread cannot run its Python between
decode steps meanwhile, so each one stalled the batch for several steps (and, in a web worker, every
request). Those objects live as long as the process, so they are frozen once start-up is done
(`gc.freeze`); later collections walk only what the process made since (0.2-1.1 ms measured).
"""
from __future__ import annotations

import gc


def freeze_start_up_objects() -> int:
    """Move every object tracked so far out of the collector's sight; how many there are now.

    Call it once the process has loaded what it keeps (models, apps), from its start-up function.
    A cycle among the frozen objects that later becomes garbage is not reclaimed: start-up objects
    are not expected to die.
    """
    gc.collect()  # what start-up already dropped is reclaimed now, not kept for ever
    gc.freeze()
    return gc.get_freeze_count()
