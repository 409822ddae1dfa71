"""Following a job live: `follow_job` replays a job's stream from any point and follows it until the
job ends; `wait_for_end` waits for the end alone. A job can end without a `final` entry (a cache
hit, a failure, a cancellation): then the final event is made from the job record, so a reader never
waits for nothing.

Following costs no Redis traffic per reader: each process has a `StreamHub` (the web app's on
a Redis client of its own), a thread (a greenlet under gevent) that reads every followed stream
with one blocking multi-key XREAD, one that hears every job's end (the guard script publishes it on
ENDED_CHANNEL) and one that checks the followed jobs' records now and then (records gone, ends
published while the hub was not listening), and they hand the events to the readers' queues. A
reader only reads Redis itself when it starts (the replay, so that an ended job answers at once),
when its job has ended (the last entries) and at its deadline. A reader of the end alone (a
synchronous request) costs no stream read at all.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import redis

from jobs.status import FINAL_STATUSES
from jobs.store import ENDED_CHANNEL, JobStore, job_key, lua_set, stream_key
from jobs.streams import (StreamEvent, entry_order, final_from_record, finished_record, parse_entries,
                          read_after)

log = logging.getLogger(__name__)

# How long the hub's XREAD blocks (also bounded by half the client's socket timeout; Redis times
# blocked reads out on its 100 ms ticks, so a round can take twice this). A reader that joins cuts
# the blocked read short. Readers at rest cost one XREAD per round in all. The end listener waits
# as long for a notice between its looks at its connection.
HUB_BLOCK_S = 0.1
# How often the hub checks the followed jobs' records (one script call for all of them). Ends are
# heard on ENDED_CHANNEL as they happen; the check catches what no notice tells: a record that expired
# or was deleted, and a Redis that hangs while a reader waits for an end. With many jobs followed it
# checks less often, so that Redis looks up at most HUB_RECORD_LOOKUPS_PER_S records a second.
HUB_RECORD_CHECK_S = 1.0
HUB_RECORD_LOOKUPS_PER_S = 10_000
# The end listener pings its connection this often and takes it for lost (and connects anew) when
# nothing has come back for three pings: a pub/sub connection to a master that vanished (a host lost
# in a failover) would otherwise stay silent for ever, since it sends nothing of its own.
HUB_LISTENER_PING_S = 1.0
# The hub reads at most this often while events keep coming, so that many streams with tokens
# flowing cost a bounded number of round trips (events wait at most this long for the batch).
HUB_MIN_READ_INTERVAL_S = 0.01


# KEYS: job hashes. Returns the (1-based) positions of the jobs that ended: final status, or no record.
ENDED_SCRIPT = """
local final = %s
local ended = {}
for i, key in ipairs(KEYS) do
  local status = redis.call('HGET', key, 'status')
  if not status or final[status] then ended[#ended + 1] = i end
end
return ended
""" % lua_set(FINAL_STATUSES)


def follow_job(store: JobStore, job_id: str, last_id: str = "0", timeout_s: float = 300, heartbeat_s: float = 10,
               deadline: Optional[float] = None,
               hub: Optional["StreamHub"] = None) -> Iterator[StreamEvent]:
    """Yield the job's events after `last_id` as they come, ending with a `final` event.

    Yields a `heartbeat` after each `heartbeat_s` without events, so that callers can keep
    idle connections alive, and a `timeout` event if the job has not ended after `timeout_s`
    from the first read, or at `deadline` (`time.monotonic()`) when given: a request's one
    deadline. A Redis error (outage) is raised from the generator as soon as the hub or the
    reader meets it. `hub` (default: the process's hub on the store's own client) follows the
    job after the replay.
    """
    if deadline is None:
        deadline = time.monotonic() + timeout_s
    else:
        timeout_s = max(0.0, deadline - time.monotonic())
    # The replay, read here so that an ended job (or one read late) answers at once.
    for event in read_after(store, job_id, last_id):
        last_id = event.id
        yield event
        if event.event == "final":
            return
    last_sent = time.monotonic()
    hub = hub or StreamHub.for_store(store)
    subscription = hub.subscribe(job_id, last_id)
    try:
        # Read once the hub listens: an end between this read and the subscription is not missed.
        finished = finished_record(store, job_id)
        if finished is not None:
            yield from _ending(store, job_id, last_id, finished)
            return
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            try:
                item = subscription.get(timeout=min(deadline - now, max(0.0, last_sent + heartbeat_s - now)))
            except queue.Empty:
                if time.monotonic() - last_sent >= heartbeat_s and time.monotonic() < deadline:
                    last_sent = time.monotonic()
                    yield StreamEvent("heartbeat", {})
                continue
            if isinstance(item, StreamEvent):
                last_id, last_sent = item.id, time.monotonic()
                yield item
                if item.event == "final":
                    return
            elif isinstance(item, _Ended):
                yield from _ending(store, job_id, last_id, item.record)
                return
            else:  # a Redis error met by the hub
                raise item
    finally:
        hub.unsubscribe(subscription)
    record = store.get(job_id) or {}
    yield StreamEvent("timeout", {"id": job_id, "status": record.get("status", "unknown"),
                                  "message": f"the job did not end within {round(timeout_s, 1):g}s; poll it"})


def wait_for_end(store: JobStore, job_id: str, deadline: float, hub: Optional["StreamHub"] = None) -> Optional[dict]:
    """Wait until the job ends or `deadline` (`time.monotonic()`) passes: its final record (a failed one
    when the record is gone), or None at the deadline. Reads no stream: the hub hears of the end. A
    Redis error met meanwhile is raised at once."""
    hub = hub or StreamHub.for_store(store)
    subscription = hub.subscribe(job_id, tokens=False)
    try:
        finished = finished_record(store, job_id)  # read once the hub listens (as in follow_job)
        while finished is None:
            try:
                item = subscription.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if isinstance(item, _Ended):
                finished = item.record
            elif isinstance(item, Exception):
                raise item
        return finished
    finally:
        hub.unsubscribe(subscription)


def _ending(store: JobStore, job_id: str, last_id: str, finished: dict) -> Iterator[StreamEvent]:
    """The job ended: entries that landed after `last_id` (the final one among them, usually), else
    a final event made from the record."""
    for event in read_after(store, job_id, last_id):
        yield event
        if event.event == "final":
            return
    yield StreamEvent("final", final_from_record(finished))


# --- The hub: one reader of every followed stream per process -------------------------------------------------

@dataclass(frozen=True)
class _Ended:
    """The job has ended (its record is final or gone); the reader reads what is left itself."""

    record: dict


@dataclass(eq=False)
class Subscription:
    """One reader of one job: the hub appends events after `cursor` to its queue (only the end when
    `tokens` is False)."""

    job_id: str
    cursor: str = "0"
    tokens: bool = True
    items: "queue.Queue[Union[StreamEvent, _Ended, Exception]]" = field(default_factory=queue.Queue)

    def get(self, timeout: float) -> Union[StreamEvent, _Ended, Exception]:
        return self.items.get(timeout=timeout)


class StreamHub:
    """Reads every stream followed in this process with one blocking XREAD and fans the events out.

    Three threads under gthread, three greenlets under gevent (threading is patched): one reads the
    streams, one hears the jobs' ends, one checks the jobs' records. The readers wait on their own
    queues and hold no Redis connection. Give the hub a store whose client nothing else uses (the web
    app does), so that a busy connection pool never starves it; it holds three connections. On a Redis error the hub
    passes the error to every reader, which raises it (a stream then ends with an error event)
    and drops them all; a reader that joins later meets the outage in its own first read.
    """

    _hubs: dict[int, "StreamHub"] = {}
    _hubs_lock = threading.Lock()

    def __init__(self, store: JobStore) -> None:
        self.store, self.redis = store, store.redis
        self.pid = os.getpid()
        self._lock = threading.Condition()
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._blocked_id: Optional[int] = None  # the reader's Redis client id while its XREAD blocks
        self._waking = False  # a CLIENT UNBLOCK is on its way
        socket_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        # A blocking read must return before the client's socket timeout (0.5 s in the web app).
        self.block_s = min(HUB_BLOCK_S, socket_timeout / 2) if socket_timeout else HUB_BLOCK_S
        self.reads = self.checks = 0  # round trips made, for tests and benchmarks
        self._ended_script = self.redis.register_script(ENDED_SCRIPT)

    @classmethod
    def for_store(cls, store: JobStore) -> "StreamHub":
        """This process's hub for the store's Redis client (a forked child gets its own)."""
        with cls._hubs_lock:
            hub = cls._hubs.get(id(store.redis))
            if hub is None or hub.pid != os.getpid() or hub.redis is not store.redis:
                hub = cls._hubs[id(store.redis)] = cls(store)
            return hub

    def followed(self) -> int:
        """How many readers are following a stream through this hub."""
        with self._lock:
            return sum(len(subs) for subs in self._subscriptions.values())

    def subscribe(self, job_id: str, cursor: str = "0", tokens: bool = True) -> Subscription:
        """A reader of the job's events after `cursor`, or of its end alone (`tokens` False)."""
        subscription = Subscription(job_id, cursor, tokens)
        with self._lock:
            self._subscriptions.setdefault(job_id, set()).add(subscription)
            for name, loop in (("stream-hub-reader", self._read_loop), ("stream-hub-ends", self._ends_loop),
                               ("stream-hub-checker", self._check_loop)):
                thread = self._threads.get(name)
                if thread is None or not thread.is_alive():
                    self._threads[name] = threading.Thread(target=loop, name=name, daemon=True)
                    self._threads[name].start()
            self._lock.notify_all()
        if tokens:
            self._wake_reader()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.job_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.job_id]

    def _followed_jobs(self) -> dict[str, set[Subscription]]:
        """The followed jobs, once there is at least one (waits without a Redis call till then); hold the lock."""
        while not self._subscriptions:
            self._lock.wait()
        return self._subscriptions

    def _followed_streams(self) -> dict[str, str]:
        """Stream key -> the oldest cursor of its token readers, once there is one; hold the lock."""
        while True:
            cursors = {stream_key(job_id): min((s.cursor for s in readers), key=entry_order)
                       for job_id, subs in self._subscriptions.items()
                       if (readers := [s for s in subs if s.tokens])}
            if cursors:
                return cursors
            self._lock.wait()

    def _read_loop(self) -> None:
        """One XREAD for every followed stream, each from the oldest cursor of its readers.

        It keeps a connection of its own and its client id, so that `subscribe` can cut a blocked
        read short (CLIENT UNBLOCK) and the next read includes the new reader's stream at once.
        """
        last_read, connection = 0.0, None
        while True:
            with self._lock:
                cursors = self._followed_streams()
                jobs = {stream_key(job_id): job_id for job_id in self._subscriptions}
            pause = last_read + HUB_MIN_READ_INTERVAL_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                if connection is None:
                    connection = self.redis.connection_pool.get_connection()
                    connection.send_command("CLIENT", "ID")
                    client_id = int(self.redis.parse_response(connection, "CLIENT ID"))
                last_read = time.monotonic()
                with self._lock:
                    self._blocked_id = client_id
                connection.send_command("XREAD", "BLOCK", max(1, int(self.block_s * 1000)), "STREAMS", *cursors,
                                        *cursors.values())
                reply = self.redis.parse_response(connection, "XREAD")
                with self._lock:
                    self._blocked_id = None
                self.reads += 1
                self._fan_out([(jobs[key], cursors[key], events) for key, events in parse_entries(reply)])
            except Exception as exc:  # noqa: BLE001 - every reader must hear of it, whatever it is
                with self._lock:
                    self._blocked_id = None
                if connection is not None:
                    connection.disconnect()
                    self.redis.connection_pool.release(connection)
                    connection = None
                self._failed(exc)

    def _wake_reader(self) -> None:
        """Cut the reader's blocked XREAD short, so that a new reader's stream is read at once."""
        with self._lock:
            if self._waking or self._blocked_id is None:
                return  # not blocked, or being woken already
            client_id, self._waking = self._blocked_id, True
        try:
            self.redis.client_unblock(client_id)
        except redis.RedisError:  # the reader meets an outage itself and tells its readers
            pass
        finally:
            with self._lock:
                self._waking = False

    def _ends_loop(self) -> None:
        """Hears every job's end on ENDED_CHANNEL and tells the job's readers. Once (re)subscribed it
        checks every followed job: ends published while it was not listening are found so.

        A lost connection is connected anew without failing the readers: the listener alone may have
        lost it (a killed client, a pub/sub buffer limit), and an outage reaches them through the record
        check within HUB_RECORD_CHECK_S."""
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    with self._lock:
                        self._followed_jobs()  # a hub nobody uses listens to nothing
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(ENDED_CHANNEL)
                    heard = pinged = time.monotonic()
                    with self._lock:
                        job_ids = list(self._subscriptions)
                    self._check_records(job_ids)
                now = time.monotonic()
                if now - heard > 3 * HUB_LISTENER_PING_S:
                    raise redis.ConnectionError("the end listener heard nothing back from Redis")
                if now - pinged >= HUB_LISTENER_PING_S:
                    pubsub.ping()
                    pinged = now
                message = pubsub.get_message(timeout=min(self.block_s, HUB_LISTENER_PING_S / 2))
                if message is not None:
                    heard = time.monotonic()
                    if message["type"] == "message":
                        self._ended(message["data"].decode())
            except Exception as exc:  # noqa: BLE001 - whatever it is, listen anew
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                    pubsub = None
                if not isinstance(exc, redis.RedisError):
                    log.exception("the stream hub's end listener failed; it listens anew")
                time.sleep(self.block_s)  # no busy loop against a Redis that refuses

    def _ended(self, job_id: str) -> None:
        """A notice that the job ended: its readers, if it has any here, get its record."""
        with self._lock:
            if job_id not in self._subscriptions:
                return
        record = finished_record(self.store, job_id)
        if record is not None:
            self._tell_ended(job_id, record)

    def _check_loop(self) -> None:
        """Every HUB_RECORD_CHECK_S or so, the followed jobs' statuses in one call (in a thread of its
        own: a blocked XREAD can take up to twice its block time to return)."""
        while True:
            with self._lock:
                job_ids = list(self._followed_jobs())
            try:
                self._check_records(job_ids)
                self.checks += 1
                time.sleep(max(HUB_RECORD_CHECK_S, len(job_ids) / HUB_RECORD_LOOKUPS_PER_S))
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not isinstance(exc, redis.RedisError):
            log.exception("stream hub failed; its readers end with the error")
        self._fail_all(exc)
        time.sleep(self.block_s)  # no busy loop against a Redis that refuses

    def _fan_out(self, streams: list[tuple[str, str, list[StreamEvent]]]) -> None:
        """(job id, cursor read from, events) per stream read: each reader gets the events after its own
        cursor. A reader that joined behind the cursor read from (during the read) gets nothing now:
        the next read starts from its cursor, so no event between the two is skipped for it."""
        with self._lock:
            for job_id, read_from, events in streams:
                for subscription in list(self._subscriptions.get(job_id, ())):
                    if not subscription.tokens:
                        continue  # a reader of the end alone: told by the end listener
                    cursor = entry_order(subscription.cursor)
                    if cursor < entry_order(read_from):
                        continue
                    for event in events:
                        if entry_order(event.id) > cursor:
                            subscription.items.put(event)
                            subscription.cursor = event.id
                            if event.event == "final":
                                self._drop(subscription)
                                break

    def _check_records(self, job_ids: list[str]) -> None:
        """Readers of jobs that ended (record final or gone) are told so; they read the rest themselves."""
        ended = [job_ids[position - 1] for position in self._ended_script(keys=[job_key(j) for j in job_ids])]
        for job_id in ended:
            record = finished_record(self.store, job_id)
            if record is not None:  # always (a final job stays final); never end a reader on a guess
                self._tell_ended(job_id, record)

    def _tell_ended(self, job_id: str, record: dict) -> None:
        with self._lock:
            for subscription in list(self._subscriptions.get(job_id, ())):
                subscription.items.put(_Ended(record))
                self._drop(subscription)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            for subs in self._subscriptions.values():
                for subscription in subs:
                    subscription.items.put(_copy(exc))  # each reader raises its own: tracebacks stay apart
            self._subscriptions.clear()


def _copy(exc: Exception) -> Exception:
    try:
        return type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return redis.ConnectionError(f"{type(exc).__name__}: {exc}")
