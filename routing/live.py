"""The router as configured on disk, rebuilt when its routes or parameters file changes."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import yaml

from routing.intents import load_route_table, routes_path
from routing.params import build_router, load_params, params_path
from routing.router import Router
from settings import Settings

log = logging.getLogger(__name__)

Signature = tuple  # (mtime_ns, size, inode) of each file, None for a missing one


def configured_files(settings: Settings) -> tuple[Path, Path]:
    """The routes and parameters files the settings name (ROUTES_FILE, ROUTING_PARAMS_FILE), else the bundled ones."""
    return routes_path(settings.routes_file), params_path(settings.routing_params_file)


def load_router(routes_file: Path | str, params_file: Path | str,
                encode: Callable[[Sequence[str]], np.ndarray]) -> Router:
    """Build a router from a routes file and a parameters file (which may be absent).

    Raises ValueError, naming the file, if either is invalid.
    """
    try:
        table = load_route_table(routes_file)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"routes file {routes_file}: {exc}") from None
    try:
        params = load_params(params_file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"parameters file {params_file}: {exc}") from None
    try:
        return build_router(table, params, encode)
    except ValueError as exc:
        raise ValueError(f"parameters file {params_file} does not fit routes file {routes_file} "
                         f"(rerun python -m routing.calibrate): {exc}") from None


class LiveRouter:
    """Hands out the current router; a cheap stat per call notices edits to its files.

    A changed file is loaded by one caller while the others keep routing with the old
    router. An invalid file keeps the old router and logs one error per bad version.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], routes_file: Path | str | None = None,
                 params_file: Path | str | None = None) -> None:
        self.encode = encode
        self.routes_file = Path(routes_file or routes_path())
        self.params_file = Path(params_file or params_path())
        self._router: Optional[Router] = None
        self._loaded: Optional[Signature] = None
        self._rejected: Optional[Signature] = None
        self._reload_lock = threading.Lock()

    def get(self) -> Router:
        """The router for the files as they are now (or the last valid version of them)."""
        signature = self._signature()
        if signature not in (self._loaded, self._rejected):
            # The first load makes everyone wait; later reloads are done by one thread only.
            if self._reload_lock.acquire(blocking=self._router is None):
                try:
                    if signature not in (self._loaded, self._rejected):
                        self._reload(signature)
                finally:
                    self._reload_lock.release()
        return self._router

    def _reload(self, signature: Signature) -> None:
        try:
            router = load_router(self.routes_file, self.params_file, self.encode)
        except ValueError as exc:
            if self._router is None:
                raise  # nothing to fall back on
            self._rejected = signature
            log.error("routing config not reloaded, still routing with the previous version: %s", exc)
            return
        self._router, self._loaded = router, signature
        log.info("routing config loaded: %s (scoring %s), %s", self.routes_file, router.scoring,
                 self.params_file if self.params_file.exists() else "no parameters file")

    def _signature(self) -> Signature:
        return tuple(_stat(path) for path in (self.routes_file, self.params_file))


def _stat(path: Path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
