"""`make stats`: the current key figures, read from the StatsD daemon's admin port.

Etsy's statsd answers `counters`, `timers`, `gauges` and `stats` on its admin port
(STATSD_ADMIN_PORT, 8126) with Node's util.inspect text. Counters and timers cover the
flush window in progress (STATSD_FLUSH_INTERVAL_MS, 60 s); gauges keep their last value.
"""
from __future__ import annotations

import re
import socket
import sys
from collections import defaultdict

from monitoring.figures import percentile
from settings import get_settings

NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
SCALAR = re.compile(rf"'([^']+)':\s*({NUMBER})")
ARRAY = re.compile(r"'([^']+)':\s*\[(.*?)\]", re.S)
MORE_ITEMS = re.compile(r"\.\.\. (\d+) more items?")


def ask(command: str, host: str, port: int, timeout: float = 2.0) -> str:
    """One admin command; the daemon ends each answer with END."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"{command}\n".encode())
        answer = b""
        while b"END" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rsplit("END", 1)[0]


def parse_scalars(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in SCALAR.findall(text)}


def parse_timers(text: str) -> dict[str, tuple[list[float], int]]:
    """name -> (the samples shown, how many there are): util.inspect shows only the first 100."""
    timers = {}
    for name, body in ARRAY.findall(text):
        shown = [float(v) for v in re.findall(NUMBER, MORE_ITEMS.sub("", body))]
        hidden = sum(int(n) for n in MORE_ITEMS.findall(body))
        timers[name] = (shown, len(shown) + hidden)
    return timers


def report(counters: dict, timers: dict, gauges: dict, status: dict, prefix: str, window_s: float) -> str:
    strip = lambda name: name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name  # noqa: E731
    uptime = int(status.get("uptime", 0))
    lines = [f"statsd: up {uptime // 60}m{uptime % 60:02d}s, last metric {int(status.get('last_msg_seen', 0))}s ago, "
             f"{int(counters.get('statsd.metrics_received', 0))} metrics in this window "
             f"({uptime % window_s:.0f}s of {window_s:.0f}s)", ""]
    ours = {strip(k): v for k, v in gauges.items() if k.startswith(prefix)}
    lines.append("gauges (latest)")
    lines += [f"  {name:<44} {value:>10g}" for name, value in sorted(ours.items())] or ["  none yet"]
    ours = {strip(k): v for k, v in counters.items() if k.startswith(prefix) and v}
    lines += ["", "counters (this window)"]
    lines += [f"  {name:<44} {value:>10g}" for name, value in sorted(ours.items())] or ["  none yet"]
    lines += _cache_ratios(ours)
    lines += ["", f"  {'timers (this window, ms)':<44} {'n':>6} {'p50':>9} {'p95':>9} {'max':>9}"]
    rows = []
    for name, (shown, total) in sorted(timers.items()):
        if name.startswith(prefix) and shown:
            ordered = sorted(shown)
            note = "" if total == len(shown) else f"  (percentiles of the first {len(shown)})"
            rows.append(f"  {strip(name):<44} {total:>6} {percentile(ordered, 0.5):>9.1f} "
                        f"{percentile(ordered, 0.95):>9.1f} {ordered[-1]:>9.1f}{note}")
    lines += rows or ["  none yet"]
    return "\n".join(lines)


def _cache_ratios(counters: dict) -> list[str]:
    hits, lookups = defaultdict(float), defaultdict(float)
    for name, value in counters.items():
        parts = name.split(".")
        if parts[0] == "cache" and len(parts) == 4 and parts[3] in ("hit", "miss"):
            lookups[parts[1]] += value
            hits[parts[1]] += value if parts[3] == "hit" else 0
    return [f"  cache {kind} hit rate: {hits[kind] / lookups[kind]:.0%} of {lookups[kind]:g} lookups"
            for kind in sorted(lookups)]


def main() -> int:
    settings = get_settings()
    host = settings.statsd_admin_host or settings.statsd_host or "127.0.0.1"
    port = settings.statsd_admin_port
    try:
        answers = {c: ask(c, host, port) for c in ("counters", "timers", "gauges", "stats")}
    except OSError as err:
        print(f"no StatsD daemon answers on {host}:{port} ({err}); is `make run` running?", file=sys.stderr)
        return 1
    status = {k.split(".")[-1]: float(v) for k, v in re.findall(rf"^(\S+): ({NUMBER})$", answers["stats"], re.M)}
    window_s = settings.statsd_flush_interval_ms / 1000
    print(report(parse_scalars(answers["counters"]), parse_timers(answers["timers"]),
                 parse_scalars(answers["gauges"]), status, settings.statsd_prefix, window_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
