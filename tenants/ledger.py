"""Writing usage and audit entries through from Redis to SQL in batches, and reading usage back.

A flush renames the pending hash and list to a batch of their own in one step (so counting goes on
into a fresh hash meanwhile) and applies the batch in one SQL transaction that also records its id:
a batch is applied exactly once, even when a flusher dies half way and another picks it up. Reads
add what is still in Redis to what SQL has, so usage is exact the moment a job ends.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from datetime import date, datetime, timezone
from typing import Iterable, Optional

import redis
from sqlalchemy import Engine, insert, select

from tenants.audit import AUDIT_PENDING
from tenants.keys import epoch, now
from tenants.meter import MONTH_TTL_S, NO_KEY, PENDING, month_key
from tenants.schema import COUNTERS, audit_log, usage_batches, usage_daily

log = logging.getLogger(__name__)
BATCHES = "usage:batches"  # ids of batches taken from Redis and not yet known applied
# A sequence number (a seqlock): odd while a batch is being applied to SQL, +2 per take. A reader that saw
# it odd, or saw it change, may have read counts in Redis and again in SQL, and reads again.
MOVES = "usage:moves"
READ_ATTEMPTS = 10
READ_RETRY_S = 0.01

_TAKE_BATCH = """
local taken = 0
for i = 1, 2 do
  if redis.call('exists', KEYS[i]) == 1 then
    redis.call('rename', KEYS[i], KEYS[i + 2])
    taken = 1
  end
end
if taken == 1 then
  redis.call('sadd', KEYS[5], ARGV[1])
  redis.call('incrby', KEYS[6], 2)
end
return taken
"""


def usage_batch_key(batch_id: str) -> str:
    return f"usage:batch:{batch_id}"


def audit_batch_key(batch_id: str) -> str:
    return f"audit:batch:{batch_id}"


def _dialect_insert(engine_or_connection, table):
    name = engine_or_connection.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        raise RuntimeError(f"usage is kept on SQLite or PostgreSQL, not {name}")
    return dialect_insert(table)


def _counts(items: Iterable[tuple[bytes, bytes]], owner: Optional[str] = None) -> dict[tuple[str, str], dict]:
    """{(owner, day): {counter: amount}} from `owner|day|counter` fields (only `owner`'s when given)."""
    totals: dict[tuple[str, str], dict] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    for field, amount in items:
        key_id, day, counter = field.decode().split("|")
        if owner is None or key_id == owner:
            totals[(key_id, day)][counter] += int(amount)
    return totals


class UsageLedger:
    """Moves counted usage and queued audit entries to SQL, and reads usage per owner and day."""

    def __init__(self, engine: Engine, client: redis.Redis) -> None:
        self.engine = engine
        self.redis = client
        self._take = client.register_script(_TAKE_BATCH)

    def flush(self) -> int:
        """Write everything pending to SQL; the number of batches applied.

        Batches a flusher took and did not finish (it died, or SQL was away) go first; while any is
        left, no new one is taken, so an SQL outage leaves one growing pending hash, not a batch per
        flush of every process.
        """
        applied = 0
        for member in self.redis.smembers(BATCHES):
            applied += self._apply(member.decode())  # raises while SQL is away: retried next flush
        batch_id = uuid.uuid4().hex
        if self._take(keys=[PENDING, AUDIT_PENDING, usage_batch_key(batch_id), audit_batch_key(batch_id), BATCHES,
                            MOVES], args=[batch_id]):
            applied += self._apply(batch_id)
        return applied

    def _apply(self, batch_id: str) -> bool:
        usage = _counts(self.redis.hgetall(usage_batch_key(batch_id)).items())
        entries = [json.loads(raw) for raw in self.redis.lrange(audit_batch_key(batch_id), 0, -1)]
        self.redis.incr(MOVES)  # odd: readers wait
        try:
            with self.engine.begin() as connection:
                claim = _dialect_insert(connection, usage_batches).values(batch_id=batch_id, applied_at=now())
                claimed = claim.on_conflict_do_nothing().returning(usage_batches.c.batch_id)
                applied = connection.execute(claimed).first() is not None
                if applied:
                    for (owner, day), counts in usage.items():
                        self._add(connection, owner, date.fromisoformat(day), counts)
                    if entries:
                        connection.execute(insert(audit_log), [_audit_row(entry) for entry in entries])
        finally:
            self.redis.incr(MOVES)  # even again
        pipe = self.redis.pipeline()
        pipe.delete(usage_batch_key(batch_id), audit_batch_key(batch_id))
        pipe.srem(BATCHES, batch_id)
        pipe.execute()
        return applied

    @staticmethod
    def _add(connection, owner: str, day: date, counts: dict) -> None:
        statement = _dialect_insert(connection, usage_daily).values(key_id=owner, day=day, **counts)
        connection.execute(statement.on_conflict_do_update(
            index_elements=["key_id", "day"],
            set_={counter: usage_daily.c[counter] + statement.excluded[counter] for counter in COUNTERS}))

    def usage(self, owner: Optional[str], since: date) -> list[dict]:
        """`owner`'s counters per day from `since` (UTC), oldest first: SQL plus what Redis still holds.

        Redis is read before SQL, so a flush that moves counts in between would count them twice: the read
        starts over while `MOVES` says a move is under way or changed meanwhile (READ_ATTEMPTS at most).
        """
        owner = owner or NO_KEY
        for _ in range(READ_ATTEMPTS):
            moves = self.redis.get(MOVES)
            if int(moves or 0) % 2:  # a batch is being applied
                time.sleep(READ_RETRY_S)
                continue
            days = self._read_usage(owner, since)
            if self.redis.get(MOVES) == moves:
                return days
        return self._read_usage(owner, since)

    def _read_usage(self, owner: str, since: date) -> list[dict]:
        totals = self._unwritten(owner)
        with self.engine.connect() as connection:
            rows = connection.execute(select(usage_daily).where(usage_daily.c.key_id == owner,
                                                                usage_daily.c.day >= since))
            for row in rows:
                day = totals.setdefault((owner, row.day.isoformat()), dict.fromkeys(COUNTERS, 0))
                for counter in COUNTERS:
                    day[counter] += getattr(row, counter)
        return [{"day": day, **counts} for (_, day), counts in sorted(totals.items()) if day >= since.isoformat()]

    def _unwritten(self, owner: str) -> dict[tuple[str, str], dict]:
        """`owner`'s counts still in Redis: pending, and in batches taken but not yet applied."""
        items = list(self.redis.hscan_iter(PENDING, match=f"{owner}|*"))
        batch_ids = [member.decode() for member in self.redis.smembers(BATCHES)]
        if batch_ids:
            with self.engine.connect() as connection:
                applied = set(connection.execute(select(usage_batches.c.batch_id).where(
                    usage_batches.c.batch_id.in_(batch_ids))).scalars())
            for batch_id in set(batch_ids) - applied:
                items += self.redis.hscan_iter(usage_batch_key(batch_id), match=f"{owner}|*")
        return _counts(items, owner)

    def month_tokens(self, owner: Optional[str], month: str) -> int:
        """Tokens (prompt and completion) `owner` used in `month` (YYYY-MM): Redis's running total,
        built from SQL and Redis when missing (the first budget check, or after a Redis flush)."""
        owner = owner or NO_KEY
        kept = self.redis.get(month_key(owner, month))
        if kept is not None:
            return int(kept)
        days = self.usage(owner, date.fromisoformat(f"{month}-01"))
        total = sum(day["prompt_tokens"] + day["completion_tokens"] for day in days if day["day"].startswith(month))
        self.redis.set(month_key(owner, month), total, nx=True, ex=MONTH_TTL_S)
        return int(self.redis.get(month_key(owner, month)) or total)

    def audit_entries(self, limit: int = 50) -> list[dict]:
        """The newest audit entries in SQL, newest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
                                      .limit(limit))
            return [{"at": epoch(row.at), "actor": row.actor, "action": row.action, "subject": row.subject,
                     "detail": json.loads(row.detail) if row.detail else None} for row in rows]

    def owners(self) -> list[str]:
        """Every owner with usage in SQL (for `flask usage`)."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(usage_daily.c.key_id).distinct()).scalars())


def _audit_row(entry: dict) -> dict:
    return {"at": datetime.fromtimestamp(entry["at"], timezone.utc), "actor": entry["actor"],
            "action": entry["action"], "subject": entry["subject"],
            "detail": json.dumps(entry["detail"]) if entry.get("detail") is not None else None}


_flushers: dict[str, threading.Thread] = {}
_flushers_lock = threading.Lock()


def start_flushing(ledger: UsageLedger, interval_s: float, name: str) -> None:
    """Flush `ledger` every `interval_s` in a daemon thread, once per process and `name` (database and Redis)."""
    with _flushers_lock:
        if name in _flushers and _flushers[name].is_alive():
            return
        thread = threading.Thread(target=_flush_forever, args=(ledger, interval_s), daemon=True,
                                  name=f"usage-flusher-{len(_flushers)}")
        _flushers[name] = thread
        thread.start()


def _flush_forever(ledger: UsageLedger, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        try:
            ledger.flush()
        except Exception:  # SQL or Redis away: what is pending stays in Redis for the next flush
            log.exception("could not write usage through to SQL; retrying in %.1fs", interval_s)
