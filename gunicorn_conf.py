"""gunicorn's configuration for the web app, `gunicorn -c python:gunicorn_conf`: the bookkeeping
of prometheus_client's multiprocess mode, which `GET /metrics` uses to add up every gunicorn process,
and the start of each serving worker's background work (`webapp.start_serving`).

Used by `make run` (deploy/supervisord.conf) and by the tests (tests/helpers.py `web_command`).
The multiprocess bookkeeping is done only when PROMETHEUS_MULTIPROC_DIR is set. A plain top-level module,
like celeryconfig.py: the master loads it before gunicorn applies `--env` and before gevent patches the
workers, so it imports no package of the project (webapp would bring prometheus_client in too early,
in its in-memory mode, and sockets before the patching).
"""
from __future__ import annotations

import glob
import os


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def on_starting(server) -> None:
    """In the master, before any worker: the directory exists and holds nothing of an earlier run (its
    counters would be added to this run's, also when supervisord restarts gunicorn)."""
    path = multiprocess_dir()
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def child_exit(server, worker) -> None:
    """In the master, when a worker process has exited: its live gauges leave the sum."""
    if multiprocess_dir():
        from prometheus_client import multiprocess  # only here: the master imports nothing else of it

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded (after gevent's patching): start its background work."""
    from webapp import start_serving

    start_serving(worker.wsgi)
