"""The host's core budget (engines.cores): flock-based, so these tests use real processes where it matters."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from engines.cores import CoreBudget

ROOT = Path(__file__).resolve().parent.parent


def test_an_engine_alone_takes_every_core(tmp_path):
    small, large = CoreBudget(2, 0, tmp_path), CoreBudget(2, 1, tmp_path)
    small.busy(True)
    assert small.acquire() == 2, "the large tier is idle: its core is free to borrow"
    small.release()
    small.busy(False)
    large.busy(True)
    assert large.acquire() == 2
    large.release()


def test_two_busy_engines_take_a_core_each(tmp_path):
    small, large = CoreBudget(2, 0, tmp_path), CoreBudget(2, 1, tmp_path)
    small.busy(True)
    large.busy(True)
    assert small.acquire() == 1
    assert large.acquire() == 1, "each keeps its own core while both have work"
    small.release()
    large.release()
    large.busy(False)
    assert small.acquire() == 2, "the large tier went idle: its core is lent again"


def test_a_borrowed_home_core_comes_back_after_the_borrowers_step(tmp_path):
    small, large = CoreBudget(2, 0, tmp_path), CoreBudget(2, 1, tmp_path)
    small.busy(True)
    assert small.acquire() == 2  # borrowing the large tier's core for this step
    large.busy(True)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(large.acquire()))
    waiter.start()
    time.sleep(0.05)
    assert not got, "the large tier waits for the borrower's step to end"
    small.release()
    waiter.join(timeout=5)
    assert got == [1]


def test_more_engines_than_cores_share_home_cores(tmp_path):
    first, second = CoreBudget(1, 0, tmp_path), CoreBudget(1, 1, tmp_path)  # both homed at core 0
    first.busy(True)
    second.busy(True)
    assert first.acquire() == 1
    started = time.monotonic()
    threading.Timer(0.05, first.release).start()
    assert second.acquire() == 1, "the second takes the core once the first's step ends"
    assert time.monotonic() - started >= 0.04
    second.release()


def test_a_killed_process_releases_its_cores(tmp_path):
    """The large tier's process holds its core mid-step and is killed: the kernel frees the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from engines.cores import CoreBudget; "
         "b = CoreBudget(2, 1, Path(sys.argv[1])); b.busy(True); b.acquire(); print('held', flush=True); "
         "time.sleep(60)", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        small = CoreBudget(2, 0, tmp_path)
        small.busy(True)
        assert small.acquire() == 1, "another process's busy engine keeps its core"
        small.release()
        holder.kill()
        holder.wait(timeout=10)
        assert small.acquire() == 2
        small.release()
    finally:
        holder.kill()


def test_a_wedged_neighbour_cannot_stop_a_step(tmp_path, monkeypatch):
    monkeypatch.setattr("engines.cores.HOME_WAIT_S", 0.1)
    wedged, waiting = CoreBudget(1, 0, tmp_path), CoreBudget(1, 0, tmp_path)
    wedged.busy(True)
    wedged.acquire()  # and never released
    started = time.monotonic()
    assert waiting.acquire() == 1, "after HOME_WAIT_S the step runs anyway, on one thread"
    assert 0.1 <= time.monotonic() - started < 2
    waiting.release()
    started = time.monotonic()
    waiting.acquire()
    assert time.monotonic() - started < 0.05, "the next steps do not wait for the wedged holder again"
    waiting.release()
    wedged.release()
    assert waiting.acquire() == 1 and waiting._held == [0], "once free, the home core is taken again"


def test_on_a_bigger_host_each_tier_owns_half_the_cores(tmp_path):
    small, large = CoreBudget(4, 0, tmp_path), CoreBudget(4, 1, tmp_path)
    assert (small.homes, large.homes) == ([0, 2], [1, 3])
    small.busy(True)
    large.busy(True)
    assert small.acquire() == 2 and large.acquire() == 2, "two busy tiers: their own halves"
    small.release()
    large.release()
    large.busy(False)
    assert small.acquire() == 4
    small.release()
