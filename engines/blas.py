"""A real BLAS for MLX on Linux: load OpenBLAS into the global symbol scope before MLX loads.

The `mlx[cpu]` wheel links a bundled reference BLAS, whose matrix products are
naive loops: batched decoding barely gains over one stream with it. A library
that `dlopen`s with RTLD_GLOBAL before `mlx.core` is imported provides
`cblas_sgemm` & co. ahead of MLX's own dependencies (the same effect as
`LD_PRELOAD`), so MLX's float32 matmuls run on OpenBLAS. Quantized matmuls are
MLX's own kernels and do not change.

Configuration: `ENGINE_BLAS` = `auto` (default: Debian's libopenblas0-pthread
when it is installed), `off`, or the path of a BLAS shared library;
`ENGINE_BLAS_THREADS` (default 1): OpenBLAS threads per process. One is best
here: several engine processes share few cores, and OpenBLAS threads that wait
for a descheduled sibling spin, which made a 576x576 product take 40 ms
instead of 0.2 ms under load (see docs/benchmarks.md).
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import sys
from typing import Optional

from settings import get_settings

log = logging.getLogger(__name__)

# Debian/Ubuntu `libopenblas0-pthread` (what `deploy/install-openblas.sh` installs).
CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/*-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblasp.so.0",
)

_loaded: Optional[str] = None
_decided = False


def find_openblas() -> Optional[str]:
    """The first OpenBLAS library found on this machine, or None."""
    for pattern in CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.path.isfile(path):
                return path
    return None


def _wanted() -> Optional[str]:
    setting = get_settings().engine_blas.strip()
    if setting.lower() in ("off", "0", "false", "none", ""):
        return None
    if setting.lower() == "auto":
        if not sys.platform.startswith("linux"):
            return None  # macOS: MLX uses Accelerate and Metal
        path = find_openblas()
        if path is None:
            log.warning("OpenBLAS not found (apt-get install libopenblas0-pthread): "
                        "MLX keeps its bundled reference BLAS, which is much slower on CPU")
        return path
    return setting


def enable_fast_blas() -> Optional[str]:
    """Load the configured BLAS globally once per process; return its path, or None.

    Must run before `mlx.core` is first imported; later it only warns.
    """
    global _loaded, _decided
    if _decided:
        return _loaded
    _decided = True
    path = _wanted()
    if path is None:
        return None
    if "mlx.core" in sys.modules:
        log.warning("MLX was imported before engines.blas: %s not used", path)
        return None
    try:
        library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        log.warning("cannot load BLAS %s (%s): MLX keeps its bundled BLAS", path, exc)
        return None
    threads = get_settings().engine_blas_threads
    if hasattr(library, "openblas_set_num_threads"):
        library.openblas_set_num_threads(threads)
    _loaded = path
    log.info("MLX uses BLAS from %s (%d threads)", path, threads)
    return path


def blas_in_use() -> Optional[str]:
    """The BLAS library this process loaded for MLX, or None for MLX's bundled one."""
    return _loaded
