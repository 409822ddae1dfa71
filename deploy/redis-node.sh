#!/bin/sh
# Start one Redis data node of the Sentinel group (deploy/compose.yaml, `make cluster`): as a replica of the
# master the sentinels name now, or as the master when they name this node or, at the group's first start,
# when no sentinel answers yet and this node is FIRST_MASTER.
#
# Why: a master that fails and restarts must not come back as a master. Until the sentinels notice and demote
# it (about ten seconds in `make cluster`), a client that asks a sentinel not yet told of the failover writes
# to it, and those writes are wiped when it resyncs from the new master (a split brain; `make cluster` lost
# jobs to it before this script).
#
# Environment:
#   NODE          this node's address as the sentinels report it (an IP, or a hostname with announce-hostnames)
#   REDIS_PORT    this node's port (default 6379)
#   FIRST_MASTER  the master's address at the group's first start (host, or host:port when not REDIS_PORT)
#   SENTINELS     "host:port host:port ..."
#   MASTER_NAME   the group's name (REDIS_SENTINEL_MASTER)
# Arguments: the redis-server command line, without --replicaof.
set -eu
port=${REDIS_PORT:-6379}
named_self=""
for sentinel in $SENTINELS; do
  # The master's address and port, one per line; nothing from a sentinel that is not up (yet).
  answer=$(timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
           SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null || true)
  master=$(printf '%s\n' "$answer" | sed -n 1p)
  master_port=$(printf '%s\n' "$answer" | sed -n 2p)
  case "$master_port" in ''|*[!0-9]*) continue ;; esac
  if [ "$master:$master_port" != "$NODE:$port" ]; then
    # A sentinel that names another node has seen a failover that one naming this node may not have yet.
    echo "redis-node: $NODE:$port starts as a replica of $master:$master_port (sentinel $sentinel)" >&2
    exec "$@" --replicaof "$master" "$master_port"
  fi
  named_self=yes
done
first_host=${FIRST_MASTER%:*}
first_port=${FIRST_MASTER#"$first_host"}
first_port=${first_port#:}
first_port=${first_port:-$port}
if [ -z "$named_self" ] && [ "$first_host:$first_port" != "$NODE:$port" ]; then
  echo "redis-node: no sentinel answers; $NODE:$port starts as a replica of the first master $first_host:$first_port" >&2
  exec "$@" --replicaof "$first_host" "$first_port"
fi
echo "redis-node: $NODE:$port starts as the master" >&2
exec "$@"
