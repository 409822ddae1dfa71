"""Job records in Redis and the one guarded way to change them.

A job is the hash `job:<id>`, expiring with the job TTL. Every writer changes a job through
`JobStore.move` (a status transition) or `JobStore.annotate` (fields only), both run by one Redis
script generated from `jobs.status.TRANSITIONS`: a final job stays final, and a job's final stream
event is written in the same script as its final status.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional, Union

import redis
from redis.client import Pipeline

from jobs.status import FINAL_STATUSES, TRANSITIONS, JobStatus

JSON_FIELDS = ("request", "routing", "result", "error", "result_ref")


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def stream_key(job_id: str) -> str:
    return f"job:{job_id}:stream"


# Jobs in flight: handed to the broker and not ended; job id -> when the job last changed hands (its message
# was sent, or a delivery of it began). A message can vanish (a Redis broker pops it into a dead worker's
# connection; a failover loses the last writes, an acknowledgement with them), and jobs.transit finds the jobs
# whose message is nowhere and sends them on again: whatever the lost writes were, no job waits forever.
IN_FLIGHT_KEY = "jobs:in_flight"

# The guard script publishes a job's id here when the job ends, so that waiters hear of it at once
# (jobs.follow) instead of polling records. A notice can be missed (a reader reconnecting): a waiter
# reads the record once it listens, and the listener checks its jobs' records after each (re)connect.
ENDED_CHANNEL = "jobs:ended"


def lua_set(statuses) -> str:
    """A Lua table literal with the statuses as keys (for membership tests in scripts)."""
    return "{" + ",".join(f"{status.value}=true" for status in sorted(statuses, key=lambda s: s.value)) + "}"


NEW_DELIVERY = "new"  # the fence of a write that starts a delivery (JobStore.start_delivery)


def superseded(fence_arg: int) -> str:
    """Lua that refuses (returns 0) a write whose delivery number, ARGV[fence_arg] ('' for none), is older
    than the latest delivery of the job in KEYS[1]."""
    fence = f"ARGV[{fence_arg}]"
    return (f"if {fence} ~= '' and {fence} ~= '{NEW_DELIVERY}' and "
            f"tonumber(redis.call('HGET', KEYS[1], 'delivery') or '0') > tonumber({fence}) then return 0 end")


# A new delivery's number: the server's clock in milliseconds, or one more than the latest if that is not
# below it. A counter alone would go back when a failover loses its last increments, and two live deliveries
# could share a number; a clock does not go back by a failover's seconds.
NEXT_DELIVERY = """
local clock = redis.call('TIME')
local number = math.max(tonumber(redis.call('HGET', KEYS[1], 'delivery') or '0') + 1,
                        tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
redis.call('HSET', KEYS[1], 'delivery', string.format('%d', number))
return number
"""


def _guard_script() -> str:
    """The transition guard in Lua, from the Python table (so the two cannot disagree).

    KEYS: the job hash, its stream, the in-flight index. ARGV: TTL, target status ('' keeps the status), stream event
    name ('' for none), event data, the writer's delivery number ('' for a writer outside a delivery,
    such as a cancel; 'new' to start a delivery), then field, value pairs. Moving a final job to its
    own status only adds fields it lacks (HSETNX). A job that ends is announced on ENDED_CHANNEL. A write from a delivery older than the job's latest
    is refused (fencing). A job leaves the in-flight index when it ends; a hand-over (queued again)
    enters it with the time, and a delivery that starts stamps it there anew. Returns 1 when applied (a started delivery:
    its number), 0 when refused.
    """
    allowed = ",".join(f"{source.value}={lua_set(targets)}" for source, targets in TRANSITIONS.items())
    return f"""
local allowed = {{{allowed}}}
local final = {lua_set(FINAL_STATUSES)}
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
{superseded(5)}
local target = ARGV[2]
if target == '' then
  if final[current] then return 0 end
elseif not allowed[current][target] then return 0 end
local keep = target == current and final[current]
for i = 6, #ARGV, 2 do
  if keep then redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
if target ~= '' then redis.call('HSET', KEYS[1], 'status', target) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'event', ARGV[3], 'data', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
local id = string.sub(KEYS[1], {len(job_key(""))} + 1)
if final[target] and not final[current] then redis.call('PUBLISH', '{ENDED_CHANNEL}', id) end
if final[target] then redis.call('ZREM', KEYS[3], id)
elseif target == '{JobStatus.QUEUED.value}' and current ~= target then
  redis.call('ZADD', KEYS[3], redis.call('TIME')[1], id)
elseif ARGV[5] == '{NEW_DELIVERY}' then
  redis.call('ZADD', KEYS[3], 'XX', redis.call('TIME')[1], id)
end
if ARGV[5] == '{NEW_DELIVERY}' then
{NEXT_DELIVERY}
end
return 1
"""


GUARD = _guard_script()

# KEYS: the job hash, its stream. ARGV: TTL, the writer's delivery number ('' for none), the number of events
# the writer knows its attempt has in the stream ('' not to check), then event, data pairs. Refused (0) once a
# later delivery of the job has begun; refused (-1) when the attempt's count in the record (`stream_events`,
# restarted by each `start`; a job without a record is not checked) is not the writer's: writes were lost (a failover) or landed twice (a retried
# write). Otherwise appends, counts and returns 1.
FENCED_APPEND = f"""
{superseded(2)}
local recorded = redis.call('EXISTS', KEYS[1]) == 1
local have = tonumber(redis.call('HGET', KEYS[1], 'stream_events') or '0')
if recorded and ARGV[4] ~= 'start' and ARGV[3] ~= '' and tonumber(ARGV[3]) ~= have then return -1 end
for i = 4, #ARGV, 2 do
  if ARGV[i] == 'start' then have = 0 end
  redis.call('XADD', KEYS[2], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
  have = have + 1
end
if recorded then redis.call('HSET', KEYS[1], 'stream_events', have) end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the job's delivery counts, a key whose presence stops the count. ARGV: the stage, the TTL. Returns the
# stage's deliveries so far with this one, or 0 (nothing counted) while the stopping key exists.
COUNT_DELIVERY = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return count
"""


class JobStore:
    """Create, read and move jobs; `ttl_s` is how long a record and its stream are kept."""

    def __init__(self, client: redis.Redis, ttl_s: int = 86400) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._guard = client.register_script(GUARD)
        self.fenced_append = client.register_script(FENCED_APPEND)  # jobs.streams writes events with it
        self._count_delivery = client.register_script(COUNT_DELIVERY)

    def create(self, job_id: str, request: dict, pipe: Optional[Pipeline] = None, in_flight: bool = False,
               **fields: Any) -> dict:
        """A new record, `queued` unless `fields` say otherwise (a cache hit is born succeeded).

        Given `pipe`, the writes join it and happen when the caller executes it. `in_flight`: the
        caller sends the job's message next (jobs.transit looks for it until the job ends).
        """
        record = {"id": job_id, "status": JobStatus.QUEUED.value, "created_at": time.time(), "request": request,
                  **fields}
        target = self.redis.pipeline() if pipe is None else pipe
        target.hset(job_key(job_id), mapping=_encode(record))
        target.expire(job_key(job_id), self.ttl_s)
        if in_flight:
            target.zadd(IN_FLIGHT_KEY, {job_id: record["created_at"]})
        if pipe is None:
            target.execute()
        return record

    def move(self, job_id: str, status: JobStatus, event: Optional[tuple[str, dict]] = None,
             fence: Optional[int] = None, **fields: Any) -> bool:
        """Move the job to `status` with `fields`, if the transition is allowed; False (nothing written) if not.

        `event` (name, data) is appended to the job's stream in the same step. `fence` is the writer's
        delivery number (`start_delivery`): once a later delivery of the job has begun, it is refused.
        """
        return bool(self._apply(job_id, JobStatus(status).value, event, fence, fields))

    def annotate(self, job_id: str, fence: Optional[int] = None, **fields: Any) -> bool:
        """Set fields of a job that has not ended (progress); False once it has, or once `fence` is superseded."""
        return bool(self._apply(job_id, "", None, fence, fields))

    def annotate_in(self, pipe: Pipeline, job_id: str, fence: Optional[int] = None, **fields: Any) -> None:
        """`annotate` as one command of `pipe`: its answer in `pipe.execute()` is 1 where it applied, 0 where
        it was refused (the job ended, or `fence` is superseded).

        By the script's digest alone: a pipeline given the script itself asks Redis whether it has it on every
        execute, a round trip more. Where Redis lost its scripts (a restart) `execute` raises NoScriptError;
        `load_scripts()`, then run the pipeline again."""
        pipe.evalsha(self._guard.sha, 3, job_key(job_id), stream_key(job_id), IN_FLIGHT_KEY,
                     *self._args("", None, fence, fields))

    def load_scripts(self) -> None:
        """Send the guard script to Redis (after a NoScriptError from `annotate_in`)."""
        self.redis.script_load(GUARD)

    def start_delivery(self, job_id: str, status: JobStatus, **fields: Any) -> int:
        """Move the job to `status` as `move` does, as the first write of a new delivery of it: its number
        (increasing; NEXT_DELIVERY), with which its later writes are fenced (`fence`); 0 when the move is refused. Writes
        fenced with an earlier number are refused from now on. A delivery that cannot run the job (a
        duplicate, a stale one) takes no number, so it cannot fence out the one that can."""
        return int(self._apply(job_id, JobStatus(status).value, None, NEW_DELIVERY, fields))

    def delivery(self, job_id: str) -> int:
        """The number of the job's latest delivery (0 before the first)."""
        return int(self.redis.hget(job_key(job_id), "delivery") or 0)

    def _apply(self, job_id: str, status: str, event: Optional[tuple[str, dict]], fence: Union[int, str, None],
               fields: dict) -> int:
        args = self._args(status, event, fence, fields)
        return int(self._guard(keys=[job_key(job_id), stream_key(job_id), IN_FLIGHT_KEY], args=args))

    def _args(self, status: str, event: Optional[tuple[str, dict]], fence: Union[int, str, None],
              fields: dict) -> list:
        name, data = event if event else ("", {})
        flat = [part for item in _encode(fields).items() for part in item]
        return [self.ttl_s, status, name, json.dumps(data) if event else "", "" if fence is None else fence, *flat]

    def count_delivery(self, job_id: str, stage: str, unless: str) -> int:
        """Count one more delivery of the job to `stage` (a task name) and return the total so far; 0, with
        nothing counted, when the key `unless` (the job's cancel flag) exists, read in the same round trip."""
        return int(self._count_delivery(keys=[f"{job_key(job_id)}:deliveries", unless], args=[stage, self.ttl_s]))

    def deliveries(self, job_id: str) -> dict[str, int]:
        """How often the job was delivered to each stage."""
        raw = self.redis.hgetall(f"{job_key(job_id)}:deliveries")
        return {k.decode(): int(v) for k, v in raw.items()}

    def get(self, job_id: str) -> Optional[dict]:
        raw = self.redis.hgetall(job_key(job_id))
        if not raw:
            return None
        record = {k.decode(): v.decode() for k, v in raw.items()}
        for field in JSON_FIELDS:
            if field in record:
                record[field] = json.loads(record[field])
        for field in [f for f in record if f.endswith("_at")]:
            record[field] = float(record[field])
        return self._with_referenced_result(record) if "result_ref" in record else record

    def _with_referenced_result(self, record: dict) -> dict:
        """A record whose result lives mostly elsewhere (an exact cache hit points at the cache entry
        rather than copying it): `result_ref` names the JSON value's key and the fields it lends."""
        reference = record.pop("result_ref")
        raw = self.redis.get(reference["key"])
        if raw is None:
            record["error"] = {"type": "Expired", "message": "the cached answer this job was given has expired"}
            return record
        lent = json.loads(raw)
        lent_fields = {field: lent[field] for field in reference["fields"] if field in lent}
        record["result"] = {**lent_fields, **record.get("result", {})}
        return record

    def delete(self, job_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(job_key(job_id))
        pipe.zrem(IN_FLIGHT_KEY, job_id)
        pipe.execute()


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in fields.items() if v is not None}
