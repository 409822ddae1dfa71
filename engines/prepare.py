"""`python -m engines.prepare`: convert the tiers' models once, so workers start fast."""
from __future__ import annotations

import sys

from engines.models import TIERS, resolve_model


def main() -> int:
    for tier in TIERS:
        spec = resolve_model(tier, progress=lambda line: print(f"[{tier}] {line}", flush=True))
        print(f"[{tier}] ready: {spec.model_id} at {spec.load_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
