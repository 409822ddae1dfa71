"""Model engines: load a model once per process and turn requests into tokens."""
from engines.blas import enable_fast_blas

# Here, because it must run before any engine module imports MLX (see engines/blas.py).
enable_fast_blas()
