"""Locust load test of the platform: `make loadtest USERS=.. DURATION=..` (the stack from `make run`).

Three kinds of users send the traffic mix of `loadtest.traffic` (about 60% small
tier, some long prompts, a quarter repeated prompts) with think times between
requests:
- `SubmitAndPollUser`: `POST /v1/jobs`, then polls `GET /v1/jobs/<id>` until the job ends;
- `SyncUser`: `POST /generate`, which waits for the answer;
- `StreamingUser`: `POST /v1/jobs`, then reads `GET /v1/jobs/<id>/stream` (Server-Sent
  Events: token events, then a final event). Where that endpoint does not exist yet
  (404), it says so once and polls instead.
Whole jobs are reported as their own rows ("job: submit+poll", "job: stream", and
"first token" for streams). The run stops early when the failure ratio passes
`--max-fail-ratio` (default 0.1), and then exits with code 1.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

import gevent
from locust import HttpUser, between, events, task
from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING, MasterRunner

from jobs.status import is_final as is_final_status
from loadtest.sse import failed, is_final, sse_events
from loadtest.traffic import Request, TrafficMix

log = logging.getLogger("loadtest")

POLL_INTERVAL_S = float(os.environ.get("LOADTEST_POLL_S", "0.5"))
JOB_TIMEOUT_S = float(os.environ.get("LOADTEST_JOB_TIMEOUT_S", "300"))
THINK_S = (float(os.environ.get("LOADTEST_THINK_MIN_S", "1")), float(os.environ.get("LOADTEST_THINK_MAX_S", "5")))
SEED = os.environ.get("LOADTEST_SEED")
MIX = TrafficMix(seed=int(SEED) if SEED else None,
                 max_tokens_scale=float(os.environ.get("LOADTEST_MAX_TOKENS_SCALE", "1")))


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--max-fail-ratio", type=float, default=0.1, env_var="LOADTEST_MAX_FAIL_RATIO",
                        help="stop the run when this share of requests has failed")


@events.init.add_listener
def _start_fail_ratio_guard(environment, **_) -> None:
    if not isinstance(environment.runner, MasterRunner):
        gevent.spawn(_guard_fail_ratio, environment)


def _guard_fail_ratio(environment) -> None:
    limit = environment.parsed_options.max_fail_ratio if environment.parsed_options else 0.1
    while environment.runner.state not in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
        gevent.sleep(1)
        total = environment.runner.stats.total
        if total.num_requests >= 10 and total.fail_ratio > limit:
            log.error("failure ratio %.2f is above %.2f: stopping", total.fail_ratio, limit)
            environment.runner.quit()
            return


@events.quitting.add_listener
def _exit_code(environment, **_) -> None:
    limit = environment.parsed_options.max_fail_ratio if environment.parsed_options else 0.1
    if environment.stats.total.fail_ratio > limit:
        environment.process_exit_code = 1


def _report(user: HttpUser, name: str, started: float, length: int = 0,
            exception: Optional[Exception] = None) -> None:
    """A row in Locust's statistics for something that spans several HTTP requests."""
    user.environment.events.request.fire(
        request_type="JOB", name=name, response_time=(time.perf_counter() - started) * 1000,
        response_length=length, exception=exception, context={})


def _body(request: Request) -> dict:
    return {"prompt": request.prompt, "max_tokens": request.max_tokens}


class PlatformUser(HttpUser):
    """What the users share: think times, the traffic mix and submitting jobs."""

    abstract = True
    wait_time = between(*THINK_S)

    def submit(self) -> Optional[str]:
        with self.client.post("/v1/jobs", json=_body(MIX.next()), catch_response=True) as response:
            if response.status_code not in (200, 202):  # 200: answered at once from the exact cache
                response.failure(f"submit answered {response.status_code}: {response.text[:200]}")
                return None
            return response.json()["id"]

    def poll(self, job_id: str, started: float, name: str) -> None:
        """Poll the job until it ends; report the whole job as one row."""
        deadline = time.time() + JOB_TIMEOUT_S
        while time.time() < deadline:
            with self.client.get(f"/v1/jobs/{job_id}", name="/v1/jobs/[id]", catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"poll answered {response.status_code}")
                    _report(self, name, started, exception=RuntimeError(f"poll answered {response.status_code}"))
                    return
                view = response.json()
            if is_final_status(view["status"]):
                error = None if view["status"] == "succeeded" else RuntimeError(f"job {view['status']}: {view.get('error')}")
                _report(self, name, started, len(json.dumps(view.get("result", ""))), error)
                return
            gevent.sleep(POLL_INTERVAL_S)
        _report(self, name, started, exception=TimeoutError(f"job {job_id} not done in {JOB_TIMEOUT_S}s"))


class SubmitAndPollUser(PlatformUser):
    """Submits a job and polls it to the end, as a batch client would."""

    weight = 3

    @task
    def submit_and_poll(self) -> None:
        started = time.perf_counter()
        job_id = self.submit()
        if job_id:
            self.poll(job_id, started, "job: submit+poll")


class SyncUser(PlatformUser):
    """Calls the synchronous endpoint, as a simple script would."""

    weight = 2

    @task
    def generate(self) -> None:
        with self.client.post("/generate", json=_body(MIX.next()), catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"/generate answered {response.status_code}: {response.text[:200]}")
            elif not isinstance(response.json().get("response"), str):
                response.failure("no response text")


class StreamingUser(PlatformUser):
    """Submits a job and follows its Server-Sent Events stream, as a chat page would."""

    weight = 1
    stream_missing = False  # set once the server answered 404 for the stream endpoint

    @task
    def submit_and_stream(self) -> None:
        started = time.perf_counter()
        job_id = self.submit()
        if not job_id:
            return
        if StreamingUser.stream_missing:
            self.poll(job_id, started, "job: stream (endpoint missing, polled)")
            return
        self.stream(job_id, started)

    def stream(self, job_id: str, started: float) -> None:
        with self.client.get(f"/v1/jobs/{job_id}/stream", name="/v1/jobs/[id]/stream", stream=True,
                             headers={"Accept": "text/event-stream"}, timeout=JOB_TIMEOUT_S,
                             catch_response=True) as response:
            if response.status_code == 404:
                response.success()  # not a failure of the system under test: the endpoint is not there yet
                if not StreamingUser.stream_missing:
                    log.warning("GET /v1/jobs/<id>/stream answered 404: streaming users poll instead")
                StreamingUser.stream_missing = True
                self.poll(job_id, started, "job: stream (endpoint missing, polled)")
                return
            if response.status_code != 200 or not response.headers.get("Content-Type", "").startswith(
                    "text/event-stream"):
                response.failure(f"stream answered {response.status_code} {response.headers.get('Content-Type')}")
                return
            self._read_events(response, started)

    def _read_events(self, response, started: float) -> None:
        tokens, final = 0, None
        for event, data in sse_events(response.iter_lines(decode_unicode=True)):
            if is_final(event, data):
                final = (event, data)
                break
            if tokens == 0:
                _report(self, "first token", started)
            tokens += 1
        if final is None:
            response.failure("the stream ended without a final event")
            _report(self, "job: stream", started, tokens, RuntimeError("no final event"))
        elif final[0] == "error" or failed(final[1]):
            response.failure(f"the stream ended with {final[0]}: {final[1][:200]}")
            _report(self, "job: stream", started, tokens, RuntimeError(final[1][:200]))
        else:
            response.success()
            _report(self, "job: stream", started, tokens)
