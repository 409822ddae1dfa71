"""Token streaming: the generation task writes a Redis Stream per job, `/v1/jobs/<id>/stream` serves it as SSE."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import redis
import requests

from conftest import ROOT
from helpers import app_with, free_port, iter_sse, job_store, web_command
from jobs.status import JobStatus
from jobs.store import stream_key
from jobs.follow import follow_job
from jobs.streams import publish
from settings import get_settings
from tasks.lifecycle import mark_job_failed
from workerctl import wait_until

DRAGON = {"prompt": "Tell me a long story about a dragon", "max_tokens": 8, "tier": "small", "cache": False}


def read_stream(client, job_id: str, comments: bool = False, **headers) -> list[dict]:
    """The whole SSE stream of a job; heartbeat comments only when asked for."""
    response = client.get(f"/v1/jobs/{job_id}/stream", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return [e for e in iter_sse(response.iter_encoded()) if comments or "comment" not in e]


def events_named(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e.get("event") == name]


@pytest.fixture(scope="module")
def streamed_job(workers, client):
    """A real job on the small tier, read live from the moment it was submitted."""
    job_id = client.post("/v1/jobs", json=DRAGON).get_json()["id"]
    events = read_stream(client, job_id)
    RECORD_AT_FINAL[job_id] = job_store().get(job_id)  # read the moment the final event has arrived
    return job_id, events


RECORD_AT_FINAL: dict[str, dict] = {}


def test_the_record_is_finished_when_the_final_event_arrives(streamed_job):
    """The final event and the finished record are written in one Redis step, so no reader sees one
    without the other."""
    job_id, events = streamed_job
    record = RECORD_AT_FINAL[job_id]
    assert record["status"] == "succeeded" and "finished_at" in record
    assert record["result"]["response"] == events[-1]["data"]["response"]


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def test_live_stream_carries_each_token_then_a_final_event_with_the_result(streamed_job):
    job_id, events = streamed_job
    assert [e["event"] for e in events][0] == "start"
    assert events[0]["data"]["tier"] == "small" and events[0]["data"]["routing"]["rule"] == "forced"
    tokens = events_named(events, "token")
    assert len(tokens) >= 2, "the answer came as one piece, not token by token"
    final = events[-1]
    assert final["event"] == "final" and events_named(events, "final") == [final]
    result = final["data"]
    assert result["status"] == "succeeded" and result["id"] == job_id
    assert "".join(t["data"]["text"] for t in tokens) == result["response"]
    for field in ("latency_ms", "queue_ms", "routing_ms", "first_token_ms", "tier", "intent", "score", "routing",
                  "model_used", "tokens"):
        assert field in result, field
    assert result["cached"] is False


def test_tokens_are_published_while_the_job_generates(streamed_job):
    job_id, events = streamed_job
    first_token_ms = int(events_named(events, "token")[0]["id"].split("-")[0])  # Redis stream ids are ms timestamps
    finished_at = job_store().get(job_id)["finished_at"]
    assert first_token_ms < finished_at * 1000


def test_a_late_client_gets_everything_from_the_start(streamed_job, client):
    job_id, live = streamed_job
    assert read_stream(client, job_id) == live


def test_last_event_id_resumes_after_that_event(streamed_job, client):
    job_id, live = streamed_job
    first_token = events_named(live, "token")[0]
    resumed = read_stream(client, job_id, **{"Last-Event-ID": first_token["id"]})
    assert resumed == live[live.index(first_token) + 1:]


def test_the_stream_expires_with_the_job(streamed_job):
    job_id, _ = streamed_job
    redis = job_store().redis
    stream_ttl, job_ttl = redis.ttl(stream_key(job_id)), redis.ttl(f"job:{job_id}")
    assert 0 < stream_ttl <= get_settings().job_ttl_s
    assert abs(stream_ttl - job_ttl) <= 60, "the stream and its job must expire together"


def test_tokens_reach_an_http_client_while_the_job_is_still_generating(live_server):
    job_id = requests.post(f"{live_server}/v1/jobs", json=DRAGON, timeout=10).json()["id"]
    with requests.get(f"{live_server}/v1/jobs/{job_id}/stream", stream=True, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = iter_sse(response.iter_content(chunk_size=None))
        first_token = next(e for e in events if e.get("event") == "token")
        status_at_first_token = requests.get(f"{live_server}/v1/jobs/{job_id}", timeout=10).json()["status"]
        rest = list(events)
    assert first_token["data"]["text"]
    assert status_at_first_token == "generating", "tokens were held back until the job ended"
    assert rest[-1]["event"] == "final" and rest[-1]["data"]["status"] == "succeeded"


def _job_record(**fields) -> str:
    """A job record written the way the web app writes one, and not queued: only the stream endpoint sees it."""
    job_id = uuid.uuid4().hex
    store = job_store()
    store.create(job_id, {"prompt": "hi", "max_tokens": 4, "temperature": 0.0, "tier": "auto"}, **fields)
    return job_id


def test_a_job_finished_without_generation_ends_the_stream_from_its_record(client):
    result = {"response": "Paris.", "tier": "small", "cached": True, "latency_ms": 3.0, "queue_ms": 0.0,
              "routing_ms": 0.0, "first_token_ms": 0.0, "model_used": "SmolLM2-135M-Instruct-q4"}
    job_id = _job_record(status="succeeded", result=result, finished_at=time.time())  # as a cache hit does
    events = read_stream(client, job_id)
    assert events == [{"event": "final", "data": {"id": job_id, "status": "succeeded", **result}, "id": None}]


@pytest.mark.parametrize("last_event_id", ["1-99999999999999999999", "18446744073709551616-0", "garbage"])
def test_a_last_event_id_redis_would_refuse_replays_from_the_start(client, last_event_id):
    job_id = _job_record(status="generating")
    publish(job_store(), job_id, "start", {"tier": "small", "model": "m", "routing": {}})
    job_store().move(job_id, "succeeded", event=("final", {"id": job_id, "status": "succeeded"}),
                     result={"response": ""}, finished_at=time.time())
    events = read_stream(client, job_id, **{"Last-Event-ID": last_event_id})
    assert [e["event"] for e in events] == ["start", "final"]


def test_a_job_that_fails_mid_stream_ends_with_a_final_failure(client):
    job_id = _job_record(status="generating")
    publish(job_store(), job_id, "start", {"tier": "small", "model": "m", "routing": {}})
    publish(job_store(), job_id, "token", {"text": "Once"})
    mark_job_failed(task_id=job_id, exception=RuntimeError("engine exploded"))
    events = read_stream(client, job_id)
    assert [e["event"] for e in events] == ["start", "token", "final"]
    final = events[-1]["data"]
    assert final["status"] == "failed" and final["error"]["message"] == "engine exploded"


def test_a_job_that_never_ends_gets_heartbeats_then_a_timeout_event():
    app = app_with(stream_timeout_s=1.0, stream_heartbeat_s=0.2)
    job_id = _job_record()
    events = read_stream(app.test_client(), job_id, comments=True)
    assert {"comment": "keep-alive"} in events
    assert events[-1]["event"] == "timeout"
    assert events[-1]["data"]["status"] == "queued"


@pytest.mark.parametrize("job_id", ["nope", "0123456789abcdef0123456789abcdef"])
def test_streaming_an_unknown_job_is_a_json_404(client, job_id):
    response = client.get(f"/v1/jobs/{job_id}/stream")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


# --- The stream hub: one reader of every followed stream per process ----------------------------------------------

def _hub():
    from jobs.store import JobStore
    from jobs.follow import StreamHub

    return StreamHub(JobStore(redis.Redis.from_url(get_settings().redis_url, socket_timeout=0.5), 3600))


def test_a_reader_that_joins_behind_a_read_in_flight_skips_no_event():
    """The hub read a stream from reader A's cursor while reader B, further behind, joined: B must not
    be handed the newer events (its cursor would jump the ones in between); the next read catches it up."""
    from jobs.follow import Subscription
    from jobs.streams import StreamEvent

    hub = _hub()
    ahead, behind = Subscription("j", "105-0"), Subscription("j", "103-0")
    hub._subscriptions["j"] = {ahead, behind}
    hub._fan_out([("j", "105-0", [StreamEvent("token", {"text": "x"}, "106-0")])])
    assert ahead.items.get_nowait().id == "106-0"
    assert behind.items.empty() and behind.cursor == "103-0"
    hub._fan_out([("j", "103-0", [StreamEvent("token", {"text": t}, f"{n}-0") for n, t in
                                  ((104, "a"), (105, "b"), (106, "x"))])])
    assert [behind.items.get_nowait().id for _ in range(3)] == ["104-0", "105-0", "106-0"]
    assert ahead.items.empty(), "the reader ahead gets nothing twice"


def test_many_readers_of_one_job_get_every_event_once_from_one_reader_of_redis():
    hub = _hub()
    job_id = _job_record(status="generating")
    publish(job_store(), job_id, "start", {"tier": "small", "model": "m", "routing": {}})
    results: dict[int, list] = {}

    def read(n: int) -> None:
        results[n] = list(follow_job(job_store(), job_id, timeout_s=30, heartbeat_s=30, hub=hub))

    readers = [threading.Thread(target=read, args=(n,)) for n in range(40)]
    for reader in readers:
        reader.start()
    wait_until(lambda: hub.followed() == 40, 10, "every reader to join the hub")
    reads_before = hub.reads
    for word in ("Once", " upon", " a", " time"):
        publish(job_store(), job_id, "token", {"text": word})
        time.sleep(0.05)
    result = {"response": "Once upon a time", "tier": "small"}
    assert job_store().move(job_id, JobStatus.SUCCEEDED, event=("final", {"id": job_id, "status": "succeeded",
                                                                           **result}), result=result,
                            finished_at=time.time())
    for reader in readers:
        reader.join(10)
    expected = [e.event for e in results[0]]
    assert expected == ["start", "token", "token", "token", "token", "final"]
    assert all([e.event for e in events] == expected for events in results.values())
    assert all(events == results[0] for events in results.values())
    assert hub.reads - reads_before < 40, "the readers were read for one by one"
    assert hub.followed() == 0


def test_a_new_reader_gets_its_first_event_at_once_though_the_hub_was_blocked():
    """Joining cuts the hub's blocked XREAD short (CLIENT UNBLOCK): no wait for the next round.

    The hub blocks 5 s per read here, so a reader left to the next round would wait seconds."""
    from jobs.follow import StreamHub
    from jobs.store import JobStore

    hub = StreamHub(JobStore(redis.Redis.from_url(get_settings().redis_url, socket_timeout=30), 3600))
    hub.block_s = 5.0
    idle = follow_job(job_store(), _job_record(status="generating"), timeout_s=30, heartbeat_s=60, hub=hub)
    threading.Thread(target=lambda: list(idle), daemon=True).start()  # the hub blocks on this one
    waits = []
    for _ in range(5):
        time.sleep(0.15)
        job_id = _job_record(status="generating")
        events = follow_job(job_store(), job_id, timeout_s=10, heartbeat_s=60, hub=hub)
        threading.Timer(0.02, publish, args=(job_store(), job_id, "token", {"text": "hi"})).start()
        started = time.monotonic()
        assert next(events).data == {"text": "hi"}
        waits.append(time.monotonic() - started)
        events.close()
    assert sorted(waits)[2] < 2.5, f"waits {waits}: the hub read the new stream only on its next round"


def test_a_reader_that_joins_late_gets_what_follows_its_last_event_id():
    hub = _hub()
    job_id = _job_record(status="generating")
    for word in ("a", "b", "c"):
        publish(job_store(), job_id, "token", {"text": word})
    first = list(follow_job(job_store(), job_id, timeout_s=0.3, heartbeat_s=10, hub=hub))[:3]
    events = follow_job(job_store(), job_id, last_id=first[1].id, timeout_s=10, heartbeat_s=10, hub=hub)
    assert next(events).data == {"text": "c"}
    publish(job_store(), job_id, "token", {"text": "d"})
    assert next(events).data == {"text": "d"}
    assert job_store().move(job_id, JobStatus.CANCELLED, finished_at=time.time())  # no final entry
    final = next(events)
    assert final.event == "final" and final.id is None and final.data["status"] == "cancelled"
    assert list(events) == []


def test_a_waiter_hears_the_end_at_once_and_reads_no_stream(monkeypatch):
    """A synchronous request waits for the end alone: the guard script's notice wakes it, long before the
    hub's next record check, and the hub reads none of the tokens the job streams meanwhile."""
    import jobs.follow
    from jobs.follow import wait_for_end

    monkeypatch.setattr(jobs.follow, "HUB_RECORD_CHECK_S", 60.0)  # only the notice can wake the waiter in time
    hub = _hub()
    job_id = _job_record(status="generating")
    ended: dict = {}
    waiter = threading.Thread(target=lambda: ended.update(
        record=wait_for_end(job_store(), job_id, time.monotonic() + 30, hub=hub)))
    waiter.start()
    wait_until(lambda: hub.followed() == 1, 10, "the waiter to join the hub")
    for word in ("a", "b", "c"):
        publish(job_store(), job_id, "token", {"text": word})
    time.sleep(0.2)
    assert job_store().move(job_id, JobStatus.CANCELLED, finished_at=time.time())  # no final entry
    moved = time.monotonic()
    waiter.join(10)
    assert ended["record"]["status"] == "cancelled"
    assert time.monotonic() - moved < 2, "the waiter waited for a record check"
    assert hub.reads == 0, "the hub read the stream of a job nobody streams"
    assert hub.followed() == 0


def test_a_waiter_of_a_job_that_ended_before_it_listened_is_answered_at_once(monkeypatch):
    import jobs.follow
    from jobs.follow import wait_for_end

    monkeypatch.setattr(jobs.follow, "HUB_RECORD_CHECK_S", 60.0)
    job_id = _job_record(status="generating")
    assert job_store().move(job_id, JobStatus.FAILED, finished_at=time.time())  # its notice went to nobody
    started = time.monotonic()
    assert wait_for_end(job_store(), job_id, time.monotonic() + 30, hub=_hub())["status"] == "failed"
    assert time.monotonic() - started < 2


class SilentProxy:
    """A TCP proxy to Redis whose connections can go silent: they stay open and carry nothing more
    (a host that vanished: no reset, no answer), while new connections are carried as before."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list = []
        self._silent: set = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        """Every connection open now goes silent."""
        self._silent.update(id(pair) for pair in self._pairs)

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            pair = (client, socket.create_connection(("127.0.0.1", self._target)))
            self._pairs.append(pair)
            for source, sink in (pair, pair[::-1]):
                threading.Thread(target=self._carry, args=(source, sink, id(pair)), daemon=True).start()

    def _carry(self, source: socket.socket, sink: socket.socket, pair: int) -> None:
        while data := source.recv(65536):
            if pair not in self._silent:
                sink.sendall(data)


def test_the_end_listener_connects_anew_when_its_connection_goes_silent(monkeypatch):
    """A pub/sub connection sends nothing of its own: to a master that vanished it would wait for ever,
    and every end after that would wait for a record check. The listener pings, and connects anew."""
    import jobs.follow
    from jobs.follow import StreamHub, wait_for_end
    from jobs.store import JobStore

    monkeypatch.setattr(jobs.follow, "HUB_RECORD_CHECK_S", 60.0)
    monkeypatch.setattr(jobs.follow, "HUB_LISTENER_PING_S", 0.2)
    direct = redis.Redis.from_url(get_settings().redis_url)
    settings = direct.connection_pool.connection_kwargs
    proxy = SilentProxy(settings["port"])
    hub = StreamHub(JobStore(redis.Redis(port=proxy.port, db=settings.get("db", 0), socket_timeout=0.5), 3600))

    def ends_heard(job_id: str) -> dict:
        ended: dict = {}
        waiter = threading.Thread(target=lambda: ended.update(
            record=wait_for_end(job_store(), job_id, time.monotonic() + 10, hub=hub)))
        waiter.start()
        wait_until(lambda: hub.followed() == 1, 10, "the waiter to join the hub")
        time.sleep(0.3)  # the listener is subscribed
        assert job_store().move(job_id, JobStatus.CANCELLED, finished_at=time.time())
        moved = time.monotonic()
        waiter.join(15)
        return {**ended, "waited_s": time.monotonic() - moved}

    assert ends_heard(_job_record(status="generating"))["waited_s"] < 2
    proxy.silence()
    time.sleep(1.5)  # several pings unanswered
    again = ends_heard(_job_record(status="generating"))
    assert again["record"] is not None and again["record"]["status"] == "cancelled"
    assert again["waited_s"] < 2, "the listener stayed on its silent connection"


def test_a_waiter_outlives_the_loss_of_the_end_listeners_connection(monkeypatch):
    """Only the listener's connection is lost (a killed client; Redis is fine): the waiters keep waiting,
    and the listener, connected anew, tells them of the end."""
    import jobs.follow
    from jobs.follow import wait_for_end

    from jobs.follow import StreamHub
    from jobs.store import JobStore

    monkeypatch.setattr(jobs.follow, "HUB_RECORD_CHECK_S", 60.0)
    name = f"hub-{uuid.uuid4().hex[:8]}"
    hub = StreamHub(JobStore(redis.Redis.from_url(get_settings().redis_url, socket_timeout=0.5, client_name=name),
                             3600))
    job_id = _job_record(status="generating")
    ended: dict = {}

    def listeners() -> list[dict]:
        return [c for c in job_store().redis.client_list(_type="pubsub") if c["name"] == name]

    def wait() -> None:
        try:
            ended["record"] = wait_for_end(job_store(), job_id, time.monotonic() + 20, hub=hub)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            ended["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(listeners, 10, "the listener to subscribe")
    killed = listeners()[0]["id"]
    assert job_store().redis.client_kill_filter(_id=killed) == 1
    wait_until(lambda: [c for c in listeners() if c["id"] != killed], 10, "the listener to listen anew")
    assert job_store().move(job_id, JobStatus.CANCELLED, finished_at=time.time())
    waiter.join(15)
    assert "error" not in ended, f"the waiter failed with {ended.get('error')!r}"
    assert ended["record"]["status"] == "cancelled"


def test_a_job_that_ends_is_announced_once():
    from jobs.store import ENDED_CHANNEL

    job_id = _job_record(status="generating")
    listener = job_store().redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(ENDED_CHANNEL)
    try:
        assert job_store().annotate(job_id, tokens_so_far=3)
        assert job_store().move(job_id, JobStatus.CANCELLED, finished_at=time.time())
        assert job_store().move(job_id, JobStatus.CANCELLED, reason="again")  # final to itself: fields only
        notices = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)
            if message and message["data"].decode() == job_id:
                notices.append(message)
        assert len(notices) == 1
    finally:
        listener.close()


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_a_redis_outage_ends_open_streams_with_an_error_event(artifacts_dir, outage):
    """Redis dies (or hangs: SIGSTOP) while a stream is open: it ends with an `error` event at once."""
    from workerctl import redis_server

    port = free_port()
    server = redis_server(port, artifacts_dir / "logs")
    try:
        app = app_with(redis_url=f"redis://127.0.0.1:{port}/0", stream_heartbeat_s=0.2, stream_timeout_s=60)
        client = app.test_client()
        job_id = uuid.uuid4().hex
        store = app.extensions["llm_platform"].store
        store.create(job_id, {"prompt": "hi", "max_tokens": 4, "temperature": 0.0, "tier": "auto"},
                     status="generating")
        publish(store, job_id, "start", {"tier": "small", "model": "m", "routing": {}})
        native = iter_sse(client.get(f"/v1/jobs/{job_id}/stream").iter_encoded())
        assert next(native)["event"] == "start"
        assert next(native) == {"comment": "keep-alive"}  # the reader follows the job through the hub now
        if outage == "killed":
            server.kill()
            server.wait()
        else:
            server.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        rest = [e for e in native if "comment" not in e]
        print(f"\nRedis {outage}: the open stream ended after {time.monotonic() - started:.2f}s")
        assert time.monotonic() - started < 3
        assert [e["event"] for e in rest] == ["error"]
        assert rest[0]["data"]["error"]["code"] == "service_unavailable"
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGCONT)
            server.kill()
            server.wait()


# --- One deadline per request ----------------------------------------------------------------------------------

def test_the_routing_wait_and_the_stream_share_one_deadline():
    """A chat stream of a job that is never routed: the routing wait spends the deadline, the stream
    gets what is left (nothing), so it ends after STREAM_TIMEOUT_S, not twice that."""
    from webapp.openai_api import streamed_completion

    app = app_with(stream_timeout_s=2.0, stream_heartbeat_s=0.2)
    record = job_store().get(_job_record())  # queued, no routing decision ever
    started = time.monotonic()
    with app.test_request_context("/v1/chat/completions", method="POST"):
        response = streamed_completion(record, include_usage=False)
    events = [e for e in iter_sse(response.response) if "comment" not in e]
    elapsed = time.monotonic() - started
    assert events[-1]["data"] == "[DONE]" and events[-2]["data"]["error"]["code"] == "timeout"
    # Two waits each given the whole 2 s would take 4 s.
    assert 1.9 <= elapsed < 3.5, f"the stream took {elapsed:.2f}s for a 2s deadline"


def test_a_request_deadline_counts_from_the_start_of_the_request():
    from webapp.submission import mark_request_start, request_deadline, time_left

    with app_with().test_request_context("/generate", method="POST"):
        mark_request_start()
        marked = time.monotonic()
        time.sleep(0.3)
        deadline = request_deadline(1.0)
        assert abs(deadline - (marked + 1.0)) < 0.05, "the deadline counts from the request's start"
        assert time_left(deadline) <= 0.7
        assert request_deadline(1.0) == deadline, "one deadline per request"


# --- Graceful shutdown of the web server ---------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_lets_open_streams_finish_and_refuses_new_connections(artifacts_dir):
    """gunicorn (gevent, as deployed) on SIGTERM: the listening socket closes at once, a stream that
    is open gets its job's end, then the server exits by itself (well within --graceful-timeout)."""
    job_id = _job_record(status="generating")
    publish(job_store(), job_id, "start", {"tier": "small", "model": "m", "routing": {}})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = web_command(port, graceful_timeout_s=60)
    log = open(artifacts_dir / "logs" / "web-sigterm.log", "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "STREAM_HEARTBEAT_S": "0.5"}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _answers(f"{base}/openapi.json"), 60, "gunicorn")
        with requests.get(f"{base}/v1/jobs/{job_id}/stream", stream=True, timeout=30) as response:
            events = (e for e in iter_sse(response.iter_content(chunk_size=None)) if "comment" not in e)
            assert next(events)["event"] == "start"
            proc.send_signal(signal.SIGTERM)  # the master, as supervisord stops it
            wait_until(lambda: _refused(f"{base}/openapi.json"), 5, "new connections to be refused")
            assert proc.poll() is None, "gunicorn exited with a stream open"
            time.sleep(1)  # the job ends a couple of seconds after SIGTERM
            publish(job_store(), job_id, "token", {"text": "Bye"})
            result = {"response": "Bye", "tier": "small"}
            assert job_store().move(job_id, JobStatus.SUCCEEDED, event=("final", {"id": job_id, "status": "succeeded",
                                                                                   **result}),
                                    result=result, finished_at=time.time())
            rest = list(events)
        assert [e["event"] for e in rest] == ["token", "final"]
        assert rest[-1]["data"]["status"] == "succeeded"
        assert proc.wait(timeout=15) == 0, "gunicorn did not exit once its last stream ended"
    finally:
        from bench.stack import stop_process

        stop_process(proc, timeout_s=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return True
    return False
