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
when nobody holds `busy-<i>`.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

TIER_HOMES = {"small": 0, "large": 1}
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
    """One engine's share of the host's cores. Used by its engine thread only."""

    def __init__(self, cores: int, home: int, directory: Optional[Path] = None) -> None:
        self.cores = max(1, cores)
        self.home = home % self.cores
        directory = directory or default_core_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self._core = [self._open(directory / f"core-{i}.lock") for i in range(self.cores)]
        self._busy = [self._open(directory / f"busy-{i}.lock") for i in range(self.cores)]
        self._is_busy = False
        self._held: list[int] = []

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    def busy(self, busy: bool) -> None:
        """Whether this engine has work: other engines borrow its home core only while it has none."""
        if busy != self._is_busy:
            fcntl.flock(self._busy[self.home], fcntl.LOCK_SH if busy else fcntl.LOCK_UN)
            self._is_busy = busy

    def acquire(self) -> int:
        """Take the cores for one step: the home core (waiting for it while a borrower's step holds it, at
        most HOME_WAIT_S) and every free core of an idle engine. Returns the step's thread count (>= 1)."""
        self._held = [self.home] if self._wait_for(self._core[self.home]) else []
        for core in range(self.cores):
            if core != self.home and self._owner_idle(core) and _try_lock(self._core[core]):
                self._held.append(core)
        return max(1, len(self._held))

    def release(self) -> None:
        for core in self._held:
            fcntl.flock(self._core[core], fcntl.LOCK_UN)
        self._held = []

    @staticmethod
    def _wait_for(fd: int) -> bool:
        deadline = time.monotonic() + HOME_WAIT_S
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _owner_idle(self, core: int) -> bool:
        if not _try_lock(self._busy[core]):
            return False
        fcntl.flock(self._busy[core], fcntl.LOCK_UN)
        return True

    def close(self) -> None:
        self.release()
        for fd in self._core + self._busy:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
