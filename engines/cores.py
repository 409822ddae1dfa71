"""The CPU cores that the llama.cpp engines of one host share, one decode step at a time.

ggml's threads wait for each other at every operation of a decode. Two engines that each ran as
many threads as the host has cores (the small and the large tier's workers) fought for the cores,
and a thread that lost its core held its partner up at the next wait: both tiers collapsed. One
thread each avoided that, but then a busy tier never used the core an idle tier left free.

So each engine has a home core (its tier's) and takes, for each decode step, its home core plus
every core whose own engine is idle, and runs that many threads for the step. Two busy tiers get a
core each; a tier alone gets them all. A step waits for its home core only while a borrower's step
holds it (one step at most). Cores are advisory `flock` locks on files in one directory per host
(`ENGINE_CORE_DIR`), so processes coordinate without a server and a killed process releases its
locks with its file descriptors.

Per core two locks: `core-<i>` is held for one step by whoever computes on core i, and `busy-<i>`
is held (shared) by every engine homed at core i while it has work: a borrower takes core i only
when nobody holds `busy-<i>`. Engines of the same tier on one host (two small workers) share their
home cores and take turns, step by step.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

TIER_HOMES = {"small": 0, "large": 1}
HOME_COUNT = len(TIER_HOMES)
HOME_WAIT_S = 1.0  # a step waits this long at most for its home core: a wedged neighbour cannot stop it
POLL_S = 0.001


def host_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_core_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"llm-platform-cores-{os.getuid()}"


class CoreBudget:
    """One engine's share of the host's cores. Used by its engine thread only.

    `home` numbers the engine among the host's engines (TIER_HOMES): of `cores`, it owns every core
    c with c % HOME_COUNT == home (at least one), so on a bigger host each tier owns half of them.
    """

    def __init__(self, cores: int, home: int, directory: Optional[Path] = None) -> None:
        self.cores = max(1, cores)
        self.homes = [c for c in range(self.cores) if c % HOME_COUNT == home % HOME_COUNT] or [home % self.cores]
        directory = directory or default_core_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self._core = [self._open(directory / f"core-{i}.lock") for i in range(self.cores)]
        self._busy = [self._open(directory / f"busy-{i}.lock") for i in range(self.cores)]
        self._is_busy = False
        self._held: list[int] = []
        self._gave_up: set[int] = set()  # home cores a neighbour held past HOME_WAIT_S: not waited for again

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    def busy(self, busy: bool) -> None:
        """Whether this engine has work: other engines borrow its home cores only while it has none."""
        if busy != self._is_busy:
            for core in self.homes:
                fcntl.flock(self._busy[core], fcntl.LOCK_SH if busy else fcntl.LOCK_UN)
            self._is_busy = busy

    def acquire(self) -> int:
        """Take the cores for one step: the home cores (waiting while a borrower's step holds one, at most
        HOME_WAIT_S, and not again for a core whose holder kept it that long) and every free core of an
        idle engine. Returns the step's thread count (>= 1)."""
        self._held = []
        for core in self.homes:
            if self._wait_for(core):
                self._held.append(core)
        for core in range(self.cores):
            if core not in self.homes and self._owner_idle(core) and _try_lock(self._core[core]):
                self._held.append(core)
        return max(1, len(self._held))

    def release(self) -> None:
        held, self._held = self._held, []
        for core in held:
            fcntl.flock(self._core[core], fcntl.LOCK_UN)

    def _wait_for(self, core: int) -> bool:
        deadline = time.monotonic() + (0 if core in self._gave_up else HOME_WAIT_S)
        while not _try_lock(self._core[core]):
            if time.monotonic() >= deadline:
                self._gave_up.add(core)  # a wedged neighbour: this step and the next run without it
                return False
            time.sleep(POLL_S)
        self._gave_up.discard(core)
        return True

    def _owner_idle(self, core: int) -> bool:
        if not _try_lock(self._busy[core]):
            return False
        fcntl.flock(self._busy[core], fcntl.LOCK_UN)
        return True

    def close(self) -> None:
        self.release()
        self.busy(False)
        for fd in self._core + self._busy:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
