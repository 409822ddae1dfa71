"""Redis behind Sentinel (jobs.sentinel): a master, a replica and three sentinels of the test's own, on
free ports. The master is killed with SIGKILL; the job store, the web app and its broker follow the
failover to the promoted replica without a restart, and keep what was replicated."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from celeryconfig import celery_config
from helpers import app_with, free_port
from jobs import redis_client
from jobs.queues import ROUTING_QUEUE, queue_depths, redis_lists
from jobs.recent import recent_jobs
from jobs.sentinel import SentinelURL, limits_uri
from jobs.store import JobStore
from workerctl import redis_server, wait_until

REDIS_NODE = Path(__file__).resolve().parents[1] / "deploy" / "redis-node.sh"

MASTER = "llm-redis"
DB = 3


def _sentinel(port: int, master_port: int, conf_dir, log_dir) -> subprocess.Popen:
    conf = conf_dir / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one each
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 10000\n")
    log = open(log_dir / f"sentinel-{port}.log", "ab")
    return subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _ready(sentinel_ports: list[int], replica_port: int) -> bool:
    """The replica is in sync and every sentinel knows the replica and the two other sentinels."""
    if redis.Redis(port=replica_port).info("replication").get("master_link_status") != "up":
        return False
    for port in sentinel_ports:
        client = redis.Redis(port=port)
        if len(client.sentinel_slaves(MASTER)) != 1 or len(client.sentinel_sentinels(MASTER)) != 2:
            return False
    return True


@pytest.fixture
def sentinels(tmp_path):
    master_port, replica_port = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    procs = [redis_server(master_port, tmp_path), redis_server(replica_port, tmp_path)]
    try:
        redis.Redis(port=replica_port).replicaof("127.0.0.1", master_port)
        procs += [_sentinel(port, master_port, tmp_path, tmp_path) for port in sentinel_ports]
        wait_until(lambda: _ready(sentinel_ports, replica_port), 60, "the replica and the sentinels")
        url = ";".join(f"sentinel://127.0.0.1:{port}/{DB}" for port in sentinel_ports)
        yield SimpleNamespace(url=url, master=procs[0], replica=procs[1], replica_port=replica_port,
                              master_port=master_port, sentinel_ports=sentinel_ports, dir=tmp_path, procs=procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _fail_over(sentinels, write) -> float:
    """Kill the master, then retry `write` until it lands on the new master; the seconds that took."""
    os.kill(sentinels.master.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: _succeeds(write), 60, "a write to the promoted replica", interval=0.05)
    return time.monotonic() - killed


def _succeeds(write) -> bool:
    try:
        write()
        return True
    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
        return False


def test_the_url_names_every_sentinel_one_database_and_the_password():
    parsed = SentinelURL.parse("sentinel://:pw@a:26379/2;sentinel://b:26380/2;sentinel://c/2")
    assert parsed == SentinelURL((("a", 26379), ("b", 26380), ("c", 26379)), 2, "pw")
    assert SentinelURL.parse("sentinel://a:1/3;sentinel://b:1").db == 3, "Celery's form: the first names it"
    uri = limits_uri("sentinel://:pw@a:26379/2;sentinel://b:26380/2", MASTER)
    assert uri == f"redis+sentinel://:pw@a:26379,b:26380/{MASTER}"
    for bad in ("redis://a:6379/0;sentinel://b:1", "sentinel://a:1/1;sentinel://b:1/2", "sentinel://"):
        with pytest.raises(ValueError):
            SentinelURL.parse(bad)


def test_the_job_store_follows_a_failover_and_keeps_what_was_replicated(sentinels):
    client = redis_client(sentinels.url, 0.5, MASTER)
    store = JobStore(client)
    store.create("before", {"prompt": "kept"})
    assert client.wait(1, 5000) == 1, "the replica has the record"
    seconds = _fail_over(sentinels, lambda: store.create("after", {"prompt": "written to the new master"}))
    print(f"\nthe job store wrote to the promoted replica {seconds:.1f}s after the master was killed")
    assert client.connection_pool.get_master_address() == ("127.0.0.1", sentinels.replica_port)
    assert store.get("before")["request"] == {"prompt": "kept"}
    assert store.get("after")["request"] == {"prompt": "written to the new master"}


def test_the_web_app_and_its_broker_follow_a_failover(sentinels):
    """Jobs are recorded and queued through the sentinels' master before and after the failover."""
    app = app_with(redis_url=sentinels.url, redis_sentinel_master=MASTER)
    client, settings = app.test_client(), app.extensions["llm_platform"].settings
    store = app.extensions["llm_platform"].store
    transport = celery_config(settings)["broker_transport_options"]
    assert transport["master_name"] == MASTER
    waiting = app.extensions["llm_platform"].broker._waiting.conf  # embeddings wait on their results there
    assert waiting.result_backend_transport_options["master_name"] == MASTER

    def submit() -> str:
        response = client.post("/v1/jobs", json={"prompt": "queued through sentinel", "max_tokens": 2})
        if response.status_code == 503:  # Redis away mid-failover: the app's answer, not a 500
            raise redis.ConnectionError(response.get_json()["error"]["message"])
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    first = submit()
    assert queue_depths(store.redis, transport, [ROUTING_QUEUE])[ROUTING_QUEUE] == 1
    # WAIT counts this connection's writes; one made after the broker's publish covers that too.
    store.redis.set("replicated-up-to-here", 1)
    assert store.redis.wait(1, 5000) == 1
    seconds = _fail_over(sentinels, submit)
    print(f"\nthe web app queued a job on the promoted replica {seconds:.1f}s after the master was killed")
    assert store.get(first)["status"] == "queued", "the job accepted before the failover is still there"
    assert queue_depths(store.redis, transport, [ROUTING_QUEUE])[ROUTING_QUEUE] == 2, "both messages wait"


def test_a_job_is_accepted_only_once_a_replica_holds_it(sentinels):
    """REDIS_MIN_REPLICAS=1: a submission is answered once the replica has the job; while the replica is
    stalled (SIGSTOP) it is refused with a 503 and the job is cancelled, so a retry cannot run it twice."""
    app = app_with(redis_url=sentinels.url, redis_sentinel_master=MASTER, redis_min_replicas=1,
                   redis_replica_wait_ms=200)
    client, store = app.test_client(), app.extensions["llm_platform"].store
    body = {"prompt": "kept on two servers", "max_tokens": 2}
    assert client.post("/v1/jobs", json=body).status_code == 202
    os.kill(sentinels.replica.pid, signal.SIGSTOP)
    try:
        refused = client.post("/v1/jobs", json=body)
    finally:
        os.kill(sentinels.replica.pid, signal.SIGCONT)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "not_replicated"
    assert refused.headers["Retry-After"] == "1"
    statuses = [job["status"] for job in recent_jobs(store, 10)]
    assert statuses == ["cancelled", "queued"], "the refused job will not run"


def test_no_job_accepted_before_a_failover_is_lost(sentinels):
    """Submissions keep coming while the master is killed: every job answered 202 is on the promoted
    replica afterwards, record and message (with one replica, later ones are refused: none is left)."""
    app = app_with(redis_url=sentinels.url, redis_sentinel_master=MASTER, redis_min_replicas=1,
                   redis_replica_wait_ms=200)
    client, store = app.test_client(), app.extensions["llm_platform"].store
    transport = celery_config(app.extensions["llm_platform"].settings)["broker_transport_options"]
    accepted, stop = [], threading.Event()

    def submit_until_stopped() -> None:
        while not stop.is_set():
            response = client.post("/v1/jobs", json={"prompt": f"job {len(accepted)}", "max_tokens": 2})
            if response.status_code == 202:
                accepted.append(response.get_json()["id"])

    submitter = threading.Thread(target=submit_until_stopped)
    submitter.start()
    wait_until(lambda: len(accepted) >= 20, 60, "jobs to be accepted")
    os.kill(sentinels.master.pid, signal.SIGKILL)
    wait_until(lambda: _succeeds(lambda: store.redis.set("is-master", 1)), 60, "the replica to be promoted",
               interval=0.05)
    stop.set()
    submitter.join()
    queued = {json.loads(raw)["headers"]["id"] for key in redis_lists(ROUTING_QUEUE, transport)
              for raw in store.redis.lrange(key, 0, -1)}
    missing = [job_id for job_id in accepted if store.get(job_id) is None or job_id not in queued]
    # A request cut off by the kill got a 503 although its job may have reached the replica: it waits too.
    print(f"\n{len(accepted)} jobs accepted around the failover, {len(missing)} lost; "
          f"{len(queued) - len(accepted)} more queued from requests that got a 503")
    assert not missing


def _redis_node(port: int, first_master_port: int, sentinel_ports: list[int], log_dir, data_dir=None,
                wait_s: int = 60) -> subprocess.Popen:
    """redis-server on `port` started as deploy/redis-node.sh starts a data node of the group."""
    data_dir = data_dir or log_dir
    env = {**os.environ, "NODE": "127.0.0.1", "REDIS_PORT": str(port), "FIRST_MASTER": f"127.0.0.1:{first_master_port}",
           "SENTINELS": " ".join(f"127.0.0.1:{p}" for p in sentinel_ports), "MASTER_NAME": MASTER,
           "DATA_DIR": str(data_dir), "SENTINEL_WAIT_S": str(wait_s)}
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(data_dir)]
    return subprocess.Popen(["sh", str(REDIS_NODE), *argv], env=env, stdout=open(log_dir / f"node-{port}.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _role_once_up(port: int) -> tuple:
    """The node's role (and master port, for a replica) the first time it answers."""
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    wait_until(lambda: _succeeds(client.ping), 20, f"redis on port {port}", interval=0.02)
    role = client.role()
    return (role[0].decode(), role[2]) if role[0] == b"slave" else (role[0].decode(),)


def test_a_group_s_first_start_makes_the_first_master_a_master_and_the_others_its_replicas(tmp_path):
    first, other, nobody = free_port(), free_port(), [free_port()]  # no sentinel runs yet
    procs = [_redis_node(first, first, nobody, tmp_path), _redis_node(other, first, nobody, tmp_path)]
    try:
        assert _role_once_up(first) == ("master",)
        assert _role_once_up(other) == ("slave", first)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_failed_master_restarts_as_a_replica_of_the_promoted_one_never_as_a_master(sentinels):
    """Were it a master until the sentinels demote it, a client asking a sentinel not yet told of the
    failover would write to it, and the writes would be wiped by its resync (`make cluster` lost jobs so)."""
    client = redis_client(sentinels.url, 0.5, MASTER)
    _fail_over(sentinels, lambda: client.set("after", 1))
    sentinels.master.wait()
    sentinels.procs.append(_redis_node(sentinels.master_port, sentinels.master_port, sentinels.sentinel_ports,
                                       sentinels.dir))
    assert _role_once_up(sentinels.master_port) == ("slave", sentinels.replica_port)


def test_a_node_holding_data_waits_for_the_sentinels_before_it_falls_back_to_the_first_master(sentinels):
    """A cold restart after a failover (a reboot): the old master's data is on disk and the sentinels start
    after it. Taking FIRST_MASTER at once, it would be a master beside the promoted one."""
    client = redis_client(sentinels.url, 0.5, MASTER)
    _fail_over(sentinels, lambda: client.set("after", 1))
    sentinels.master.wait()
    sentinel_procs = sentinels.procs[2:]
    for proc in sentinel_procs:  # every sentinel down; each keeps its rewritten file (it names the new master)
        proc.kill()
        proc.wait()
    data = sentinels.dir / "old-master"
    data.mkdir()
    (data / "appendonlydir").mkdir()  # what a restarted node finds: data of its own (not read: appendonly no)
    node = _redis_node(sentinels.master_port, sentinels.master_port, sentinels.sentinel_ports, sentinels.dir,
                       data_dir=data, wait_s=60)
    sentinels.procs.append(node)
    time.sleep(1)  # the node is waiting, not started (nothing listens on its port yet)
    assert node.poll() is None and not _succeeds(redis.Redis(port=sentinels.master_port, socket_connect_timeout=0.2).ping)
    for port in sentinels.sentinel_ports:
        log = open(sentinels.dir / f"sentinel-{port}.log", "ab")
        sentinels.procs.append(subprocess.Popen(["redis-server", str(sentinels.dir / f"sentinel-{port}.conf"),
                                                 "--sentinel"], stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
    assert _role_once_up(sentinels.master_port) == ("slave", sentinels.replica_port)
