"""`python -m engines.prepare`: convert the tiers' models once, so workers start fast (`make models`)."""
from __future__ import annotations

import sys

from engines.models import TIERS, resolve_model
from engines.provider import backend_name


def main() -> int:
    # The MLX folders are made whatever the backend: mlx_lm.server (make bench) and ENGINE_BACKEND=mlx
    # load them. Under llama.cpp, resolve_gguf also builds each file's tokenizer folder (no MLX).
    for tier in TIERS:
        spec = resolve_model(tier, progress=lambda line: print(f"[{tier}] {line}", flush=True))
        print(f"[{tier}] ready: {spec.model_id} at {spec.load_path}", flush=True)
    if backend_name() == "llamacpp":
        from engines.llamacpp_models import resolve_gguf

        for tier in TIERS:
            print(f"[{tier}] ready for llama.cpp: {resolve_gguf(tier).path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
