"""Long-running processes set their start-up objects aside from the garbage collector (heap.py), so that a
full collection does not walk the models and apps they keep (160-337 ms with the GIL held in a worker).
Each test starts with nothing frozen (conftest's `_collector_unfrozen`)."""
from __future__ import annotations

import gc

from heap import freeze_start_up_objects
from helpers import app_with
from tasks import lifecycle
from webapp import start_serving


def test_the_objects_start_up_built_are_out_of_the_collectors_sight():
    kept = [{"model": n} for n in range(10_000)]  # what a start-up keeps: containers the collector tracks
    frozen = freeze_start_up_objects()
    assert frozen == gc.get_freeze_count() >= len(kept)
    assert len(gc.get_objects()) < len(kept), "a full collection now walks only what came after the freeze"


def test_what_start_up_dropped_is_collected_before_the_freeze():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector reclaims
    del a, b
    freeze_start_up_objects()
    assert not any(type(o) is Node for o in gc.get_objects(generation=None)), "not kept for ever"
    gc.unfreeze()
    assert not any(isinstance(o, Node) for o in gc.get_objects()), "nor hidden among the frozen ones"


def test_a_serving_web_process_freezes_its_start_up():
    start_serving(app_with(usage_flush_s=0))  # no usage flusher thread in the test process
    assert gc.get_freeze_count() > 0


def test_a_worker_freezes_its_start_up_once_its_models_are_loaded():
    lifecycle._load_models_for(set())  # a worker of no model queue: nothing to load, start-up all the same
    assert gc.get_freeze_count() > 0
