#!/usr/bin/env bash
# Make sure Redis answers at REDIS_URL; start a local redis-server if it does not and one is installed.
set -euo pipefail
url=${REDIS_URL:-redis://127.0.0.1:6379/0}
py=${VENV:-.venv}/bin/python
ping() { "$py" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$url" 2>/dev/null; }
ping && exit 0
if ! command -v redis-server >/dev/null; then
  echo "Redis is not reachable at $url and redis-server is not installed: install it (apt-get install redis-server, or brew install redis) or set REDIS_URL."
  exit 1
fi
port=$("$py" -c "import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)" "$url")
mkdir -p "${RUN_DIR:-.run}"
run_dir=$(cd "${RUN_DIR:-.run}" && pwd)
echo "starting redis-server on port $port"
# Bounded memory that is never evicted (the queues and job records live here: a full Redis refuses
# writes, and the web app answers 503, rather than dropping queued jobs), and an append-only file,
# so a restart keeps what was queued.
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" \
  --maxmemory "${REDIS_MAXMEMORY:-1gb}" --maxmemory-policy noeviction --appendonly yes --appendfsync everysec \
  --dir "$run_dir" --logfile "$run_dir/redis.log"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "redis-server did not answer on port $port; see $run_dir/redis.log"
exit 1
