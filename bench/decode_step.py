"""`python -m bench.decode_step`: time one MLX decode step (the model forward) per batch width.

Isolates the model from the engine loop and HTTP: what a BLAS, its thread count or
4-bit versus float32 weights do to a step. Run it with `ENGINE_BLAS=off` to compare
with MLX's bundled BLAS. Prints the fastest and the median of `--steps` steps.
"""
from __future__ import annotations

import argparse
import time

from engines.blas import enable_fast_blas
from engines.mlx_engine import expand_quantized, should_expand_quantized
from engines.models import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tier", default="large", choices=["small", "large"])
    parser.add_argument("--batch", default="1,8,32", help="batch widths")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    blas = enable_fast_blas()  # before MLX loads

    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models.cache import make_prompt_cache

    model, _ = mlx_lm.load(resolve_model(args.tier).load_path)
    expanded = should_expand_quantized() and expand_quantized(model)
    print(f"BLAS {blas or 'bundled reference'}, tier {args.tier}, 4-bit expanded: {bool(expanded)}")
    for width in (int(b) for b in args.batch.split(",")):
        cache = make_prompt_cache(model)
        mx.eval(model(mx.array([[1, 2, 3, 4, 5, 6, 7, 8]] * width), cache=cache))
        tokens = mx.array([[9]] * width)
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            mx.eval(mx.argmax(model(tokens, cache=cache)[:, -1], axis=-1))
            times.append(time.perf_counter() - started)
        times.sort()
        fastest, median = times[0], times[len(times) // 2]
        print(f"batch {width:>2}: step {fastest * 1000:.0f} ms fastest, {median * 1000:.0f} ms median "
              f"-> {width / fastest:.1f} / {width / median:.1f} tokens/s")


if __name__ == "__main__":
    main()
