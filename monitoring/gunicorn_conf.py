"""gunicorn's configuration for the web app, `gunicorn -c python:monitoring.gunicorn_conf`: the bookkeeping
of prometheus_client's multiprocess mode, which `GET /metrics` uses to add up every gunicorn process.

Used by `make run` (deploy/supervisord.conf) and by the tests (tests/helpers.py `web_command`).
Nothing is done unless PROMETHEUS_MULTIPROC_DIR is set. (A module of a package rather than a file in
deploy/: the project's Python lives in its packages.)
"""
from __future__ import annotations

import glob
import os


def _multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def on_starting(server) -> None:
    """In the master, before any worker: the directory exists and holds nothing of an earlier run (its
    counters would be added to this run's; supervisord restarts gunicorn without `make run` emptying it)."""
    path = _multiprocess_dir()
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def child_exit(server, worker) -> None:
    """In the master, when a worker process has exited: its live gauges leave the sum."""
    if _multiprocess_dir():
        from prometheus_client import multiprocess  # only here: the master imports nothing else of it

        multiprocess.mark_process_dead(worker.pid)
