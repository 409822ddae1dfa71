#!/usr/bin/env bash
# Run Etsy's statsd (installed by `make install` when npm exists); without Node, say so once and exit 0,
# so that the rest of `make run` goes on (metrics are then sent to a port nobody reads).
daemon=node_modules/statsd/bin/statsd
if ! command -v node >/dev/null || [ ! -f "$daemon" ]; then
  echo "statsd: Node.js or node_modules/statsd is missing, so no StatsD daemon runs (install Node.js, then make install)"
  exit 0
fi
exec node "$daemon" monitoring/statsd-config.js
