"""Benchmark harness: the engine in-process, mlx_lm.server and the platform on the same model and prompts."""
