"""`python -m monitoring.flower [flower options]`: Flower on FLOWER_HOST, refusing to start off loopback
without a login (its task pages show prompts and answers)."""
from __future__ import annotations

import os
import sys
from typing import Optional

from settings import Settings, get_settings, is_loopback


def exposure_error(settings: Settings) -> Optional[str]:
    """Why Flower must not start with these settings, or None."""
    if is_loopback(settings.flower_host) or settings.flower_basic_auth.strip():
        return None
    return (f"FLOWER_HOST={settings.flower_host} is reachable from other machines and FLOWER_BASIC_AUTH is not set: "
            "Flower shows every task's prompt and answer. Set FLOWER_BASIC_AUTH=user:password, or keep "
            "FLOWER_HOST on 127.0.0.1.")


def main(argv: list[str]) -> int:
    settings = get_settings()
    error = exposure_error(settings)
    if error:
        print(f"flower not started: {error}", file=sys.stderr)
        return 1
    # Flower reads FLOWER_BASIC_AUTH from the environment itself.
    command = [sys.executable, "-m", "celery", "-A", "tasks.app", "flower", f"--address={settings.flower_host}", *argv]
    os.execv(sys.executable, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
