"""The watch on running jobs (tasks.watch): one thread per process for all of them, on the test Redis."""
from __future__ import annotations

import threading
import time
import uuid

import redis

from helpers import free_port, job_store
from jobs import control
from jobs.status import JobStatus
from jobs.store import JobStore
from tasks.watch import GenerationWatch, JobWatcher
from workerctl import redis_server


def generating_job(store) -> tuple[str, int]:
    job_id = uuid.uuid4().hex
    store.create(job_id, {"prompt": "hi"})
    return job_id, store.start_delivery(job_id, JobStatus.GENERATING)


def watcher_threads() -> int:
    return sum(thread.name == "job-watcher" for thread in threading.enumerate())


def test_one_thread_watches_every_job_and_stops_only_the_cancelled_one():
    store = job_store()
    jobs = [generating_job(store) for _ in range(10)]
    cancels = [threading.Event() for _ in jobs]
    threads_before = watcher_threads()
    watches = [GenerationWatch(store, job_id, cancel, poll_s=0.02, fence=fence)
               for (job_id, fence), cancel in zip(jobs, cancels)]
    for tokens, watch in enumerate(watches, start=1):
        watch.__enter__()
        watch.tokens = tokens
    try:
        assert watcher_threads() == threads_before + 1
        control.request_cancel(store, jobs[3][0])
        assert cancels[3].wait(5), "the cancelled job's engine request is told to stop"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(store.get(job_id).get("tokens_so_far") != str(tokens)
                                                  for tokens, (job_id, _) in enumerate(jobs, start=1)):
            time.sleep(0.02)
    finally:
        for watch in watches:
            watch.__exit__(None, None, None)
    assert [int(store.get(job_id)["tokens_so_far"]) for job_id, _ in jobs] == list(range(1, 11))
    assert [watch.reason for watch in watches] == [None] * 3 + ["cancelled"] + [None] * 6
    assert not any(cancel.is_set() for index, cancel in enumerate(cancels) if index != 3)
    assert watches[3].tokens_at_cancel == 4


def test_a_deadline_fires_before_the_next_poll():
    store = job_store()
    job_id, fence = generating_job(store)
    cancel = threading.Event()
    with GenerationWatch(store, job_id, cancel, poll_s=60, deadline=time.time() + 0.2, fence=fence) as watch:
        assert cancel.wait(5), "the deadline stops the job though the next poll is a minute away"
    assert watch.reason == "timeout"


def test_a_job_cancelled_before_its_watch_begins_is_stopped_at_the_first_poll():
    store = job_store()
    job_id, fence = generating_job(store)
    control.request_cancel(store, job_id)
    cancel = threading.Event()
    with GenerationWatch(store, job_id, cancel, poll_s=0.05, fence=fence) as watch:
        assert cancel.wait(5)
    assert watch.reason == "cancelled"


def test_a_delivery_of_a_cancelled_job_is_not_counted():
    store = job_store()
    job_id, _ = generating_job(store)
    assert store.count_delivery(job_id, "tasks.small.generate", unless=control.cancel_key(job_id)) == 1
    control.request_cancel(store, job_id)
    assert store.count_delivery(job_id, "tasks.small.generate", unless=control.cancel_key(job_id)) == 0
    assert store.deliveries(job_id) == {"tasks.small.generate": 1}


def test_a_watcher_whose_jobs_all_ended_watches_the_next_one():
    store = job_store()
    for _ in range(2):
        job_id, fence = generating_job(store)
        with GenerationWatch(store, job_id, threading.Event(), poll_s=0.02, fence=fence) as watch:
            watch.tokens = 7
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and store.get(job_id).get("tokens_so_far") != "7":
                time.sleep(0.02)
        assert store.get(job_id)["tokens_so_far"] == "7", "the progress of each job is noted"


def test_the_watch_notes_progress_after_redis_lost_its_scripts(tmp_path):
    server = redis_server(port := free_port(), tmp_path)  # of its own: scripts are server-wide
    try:
        store = JobStore(redis.Redis(port=port))
        job_id, fence = generating_job(store)
        store.redis.script_flush()  # as a restarted Redis would have none
        with GenerationWatch(store, job_id, threading.Event(), poll_s=0.02, fence=fence) as watch:
            watch.tokens = 3
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and store.get(job_id).get("tokens_so_far") != "3":
                time.sleep(0.02)
        assert store.get(job_id)["tokens_so_far"] == "3"
        assert watch.reason is None
    finally:
        server.terminate()
        server.wait()


def test_a_watch_whose_deadline_fired_does_not_keep_the_watcher_busy(monkeypatch):
    """Until its task leaves the `with` block (the engine's last step, a wedged engine's grace), a watch
    that timed out stays registered; the watcher must go on polling every poll_s, not at once and again."""
    store = job_store()
    job_id, fence = generating_job(store)
    polls = []
    original = JobWatcher.poll
    monkeypatch.setattr(JobWatcher, "poll", lambda self, watches: polls.append(len(watches)) or original(self, watches))
    cancel = threading.Event()
    with GenerationWatch(store, job_id, cancel, poll_s=0.1, deadline=time.time() + 0.05, fence=fence):
        assert cancel.wait(5)
        fired_at = len(polls)
        time.sleep(0.5)
        polls_after = len(polls) - fired_at
    assert polls_after <= 7, f"{polls_after} polls in 0.5 s with a poll interval of 0.1 s"
