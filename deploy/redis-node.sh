#!/bin/sh
# Start one Redis data node of the Sentinel group (deploy/compose.yaml, `make cluster`): as a replica of the
# master the sentinels name now, or as the master when they name this node or, at the group's first start,
# when no sentinel answers and this node is FIRST_MASTER.
#
# Why: a master that fails and restarts must not come back as a master. Until the sentinels notice and demote
# it (about ten seconds in `make cluster`), a client that asks a sentinel not yet told of the failover writes
# to it, and those writes are wiped when it resyncs from the new master (a split brain; `make cluster` lost
# jobs to it before this script).
#
# A node that holds data (DATA_DIR has an append-only file or an RDB) is not at the group's first start: the
# sentinels may have promoted another node since. It waits up to SENTINEL_WAIT_S for a sentinel to answer
# (after a reboot they may start after it) before it falls back to FIRST_MASTER.
#
# Environment:
#   NODE             this node's address as the sentinels report it (an IP, or a hostname with announce-hostnames)
#   REDIS_PORT       this node's port (default 6379)
#   FIRST_MASTER     the master's address at the group's first start (host, or host:port when not REDIS_PORT)
#   SENTINELS        "host:port host:port ..."
#   MASTER_NAME      the group's name (REDIS_SENTINEL_MASTER)
#   DATA_DIR         this node's data directory (default /data, the image's)
#   SENTINEL_WAIT_S  how long a node holding data waits for a sentinel (default 60)
# Arguments: the redis-server command line, without --replicaof.
set -eu
for tool in redis-cli timeout; do
  command -v "$tool" > /dev/null || { echo "redis-node: $tool is missing" >&2; exit 1; }
done
port=${REDIS_PORT:-6379}

# Prints "master port" as the first sentinel that names a master says; "self" when they name this node only;
# nothing when no sentinel answers.
ask_sentinels() {
  named_self=""
  for sentinel in $SENTINELS; do
    answer=$(timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
             SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null || true)
    master=$(printf '%s\n' "$answer" | sed -n 1p)
    master_port=$(printf '%s\n' "$answer" | sed -n 2p)
    case "$master_port" in ''|*[!0-9]*) continue ;; esac
    if [ "$master:$master_port" != "$NODE:$port" ]; then
      # A sentinel that names another node has seen a failover that one naming this node may not have yet.
      echo "$master $master_port $sentinel"
      return
    fi
    named_self=yes
  done
  [ -z "$named_self" ] || echo self
}

holds_data() {
  dir=${DATA_DIR:-/data}
  [ -e "$dir/appendonlydir" ] || [ -e "$dir/appendonly.aof" ] || [ -e "$dir/dump.rdb" ]
}

named=$(ask_sentinels)
if [ -z "$named" ] && holds_data; then
  waited=0
  while [ -z "$named" ] && [ "$waited" -lt "${SENTINEL_WAIT_S:-60}" ]; do
    sleep 1
    waited=$((waited + 1))
    named=$(ask_sentinels)
  done
fi
case "$named" in
  self)
    echo "redis-node: $NODE:$port starts as the master (the sentinels name it)" >&2
    exec "$@" ;;
  ?*)
    set -- "$@" --replicaof $(echo "$named" | cut -d' ' -f1-2)
    echo "redis-node: $NODE:$port starts as a replica of ${named% *} (sentinel ${named##* })" >&2
    exec "$@" ;;
esac
first_host=${FIRST_MASTER%:*}
first_port=${FIRST_MASTER#"$first_host"}
first_port=${first_port#:}
first_port=${first_port:-$port}
if [ "$first_host:$first_port" != "$NODE:$port" ]; then
  echo "redis-node: no sentinel answers; $NODE:$port starts as a replica of the first master $first_host:$first_port" >&2
  exec "$@" --replicaof "$first_host" "$first_port"
fi
echo "redis-node: no sentinel answers; $NODE:$port starts as the first master" >&2
exec "$@"
