"""Keys, usage and the audit log in SQL behind their Redis fast path, on PostgreSQL (the session's
schema) and on SQLite: counts are exact, batches apply once, and a Redis flush loses no key."""
from __future__ import annotations

import os
import uuid
from datetime import date, datetime, timezone

import pytest
import redis

from settings import get_settings
from tenants.database import database_engine, upgrade
from tenants.keys import CACHE_PREFIX, UNKNOWN, KeyStore, digest
from tenants.ledger import BATCHES, UsageLedger, usage_batch_key
from tenants.meter import PENDING, UsageMeter, usage_day, usage_month
from tenants.audit import record_audit


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request, tmp_path):
    """A migrated database of each kind: the session's PostgreSQL schema, or a new SQLite file."""
    if request.param == "postgresql":
        return database_engine(os.environ["DATABASE_URL"])
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    upgrade(url)
    return database_engine(url)


@pytest.fixture()
def client():
    """The test Redis, emptied of tenants' keys this test could see (the session's DB is shared)."""
    connection = redis.Redis.from_url(get_settings().redis_url)
    for pattern in ("usage:*", "audit:*", "tenants:key:*"):
        keys = list(connection.scan_iter(pattern))
        if keys:
            connection.delete(*keys)
    return connection


@pytest.fixture()
def k1():
    """An owner id of this test's own (the PostgreSQL schema lives for the whole session)."""
    return uuid.uuid4().hex[:8]


def parts(database, client):
    return KeyStore(database, client), UsageMeter(client), UsageLedger(database, client)


def test_a_key_survives_a_redis_flush_and_a_revoked_one_stays_refused(database, client):
    keys, _, _ = parts(database, client)
    key, record = keys.create("tenant a", rate_limit="5/minute", max_in_flight=2, monthly_token_budget=1000)
    gone, _ = keys.create("tenant b")
    assert keys.revoke(keys.lookup(gone)["id"])
    client.flushdb()
    found = keys.lookup(key)
    assert found["id"] == record["id"] and found["rate_limit"] == "5/minute" and found["monthly_token_budget"] == 1000
    assert keys.lookup(gone) is None
    assert keys.lookup("llmq_not-a-key") is None


def test_a_revocation_is_seen_at_once_even_with_the_key_cached(database, client):
    keys, _, _ = parts(database, client)
    key, record = keys.create("tenant")
    assert keys.lookup(key) is not None  # cached now
    assert keys.revoke(record["id"]) and keys.lookup(key) is None
    client.delete(CACHE_PREFIX + digest(key))  # the tombstone lost: a revocation that failed half way
    assert keys.revoke(record["id"])
    assert client.get(CACHE_PREFIX + digest(key)) == UNKNOWN, "repeating it redoes the Redis step"
    assert keys.lookup(key) is None
    assert not keys.revoke("nosuchid")


def test_usage_written_through_in_batches_matches_what_was_counted(database, client, k1):
    _, meter, ledger = parts(database, client)
    for tokens in (3, 5, 7):
        meter.record(k1, requests=1)
        meter.record_job(k1, "small", {"prompt_tokens": 10, "tokens": tokens})
        ledger.flush() if tokens != 7 else None  # the last job is still pending in Redis when read
    meter.record(k1, requests=1, cache_hits=1)
    meter.record(k1 + "b", requests=1)
    today = date.fromisoformat(usage_day())
    expected = {"day": today.isoformat(), "requests": 4, "prompt_tokens": 30, "completion_tokens": 15,
                "cache_hits": 1, "jobs_small": 3, "jobs_large": 0}
    assert ledger.usage(k1, today) == [expected]
    ledger.flush()
    assert not client.exists(PENDING)
    assert ledger.usage(k1, today) == [expected], "flushing moved the counts, it did not change them"
    assert ledger.usage(k1 + "b", today)[0]["requests"] == 1


def test_a_flush_between_a_readers_redis_and_sql_reads_is_not_counted_twice(database, client, k1):
    """The reader reads Redis, then SQL: another process's flush moving the counts in between is seen and
    the read starts over (CI once saw a job counted twice this way)."""
    _, meter, ledger = parts(database, client)
    meter.record(k1, requests=1)
    flusher = UsageLedger(database, client)  # another process's, flushing at the worst moment
    read_redis, flushed = ledger._unwritten, []

    def unwritten_then_a_flush(owner):
        counts = read_redis(owner)
        if not flushed:
            flushed.append(flusher.flush())
        return counts

    ledger._unwritten = unwritten_then_a_flush
    assert ledger.usage(k1, date.fromisoformat(usage_day()))[0]["requests"] == 1
    assert flushed == [1]


def test_a_batch_is_applied_once_when_a_flusher_dies_half_way(database, client, k1):
    _, meter, ledger = parts(database, client)
    meter.record(k1, requests=2)
    batch = uuid.uuid4().hex
    # A flusher took the batch and applied it to SQL, then died before removing it from Redis.
    ledger.flush()
    client.hset(usage_batch_key(batch), f"{k1}|{usage_day()}|requests", 5)
    client.sadd(BATCHES, batch)
    assert ledger.flush() == 1
    client.hset(usage_batch_key(batch), f"{k1}|{usage_day()}|requests", 5)
    client.sadd(BATCHES, batch)  # the same batch again: already applied
    assert ledger.flush() == 0
    assert ledger.usage(k1, date.fromisoformat(usage_day()))[0]["requests"] == 7


def test_the_month_total_is_rebuilt_from_sql_after_a_redis_flush(database, client, k1):
    _, meter, ledger = parts(database, client)
    meter.record_job(k1, "large", {"prompt_tokens": 100, "tokens": 20})
    assert ledger.month_tokens(k1, usage_month()) == 120
    meter.record_job(k1, "large", {"prompt_tokens": 1, "tokens": 2})
    assert ledger.month_tokens(k1, usage_month()) == 123, "the running total follows new usage"
    ledger.flush()
    client.flushdb()
    assert ledger.month_tokens(k1, usage_month()) == 123
    meter.record_job(k1, "small", {"prompt_tokens": 0, "tokens": 7})
    assert ledger.month_tokens(k1, usage_month()) == 130


def test_audit_entries_reach_sql_with_the_usage(database, client):
    keys, _, ledger = parts(database, client)
    _, record = keys.create("audited")
    keys.revoke(record["id"], actor="operator")
    record_audit(client, record["id"], "job_cancelled", "a" * 32, {"owner": record["id"]})
    ledger.flush()
    entries = [(e["actor"], e["action"], e["subject"]) for e in ledger.audit_entries(10)]
    assert ("operator", "key_created", record["id"]) in entries
    assert ("operator", "key_revoked", record["id"]) in entries
    assert (record["id"], "job_cancelled", "a" * 32) in entries


def test_days_are_utc_calendar_days():
    assert usage_day(datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc).timestamp()) == "2026-12-31"
    assert usage_month(datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc).timestamp()) == "2027-01"
