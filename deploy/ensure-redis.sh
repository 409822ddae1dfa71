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
echo "starting redis-server on port $port"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "${RUN_DIR:-.run}" --logfile "$(pwd)/${RUN_DIR:-.run}/redis.log"
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "redis-server did not answer on port $port; see ${RUN_DIR:-.run}/redis.log"
exit 1
