"""Helpers shared by the tests."""
from __future__ import annotations

import socket
import time
from typing import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_cached(body: dict, timeout: float = 30) -> dict:
    """The exact cache stores an answer just after the job's result is published; wait for it."""
    from cache.exact import exact_cache
    from cache.keys import exact_key
    from webapp.schemas import JobRequestSchema

    key = exact_key(JobRequestSchema().load(body))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (entry := exact_cache().index.get(key)) is not None:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"no exact cache entry for {body}")


def wait_for_job(client, job_id: str, timeout: float = 180) -> dict:
    """Poll the job API until the job ends; return the last view."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").get_json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {view}")


def iter_sse(chunks) -> Iterator[dict]:
    """Parse Server-Sent Events from an iterable of bytes/str chunks, as they arrive.

    Yields {"event", "data", "id"} per event (data JSON-decoded when it is JSON) and
    {"comment": text} per comment line.
    """
    import json

    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = {"event": "message", "data": None, "id": None}
            data_lines = []
            for line in block.splitlines():
                if line.startswith(":"):
                    yield {"comment": line[1:].strip()}
                    continue
                field, _, value = line.partition(": ")
                if field == "data":
                    data_lines.append(value)
                elif field in ("event", "id"):
                    event[field] = value
            if data_lines:
                data = "\n".join(data_lines)
                try:
                    event["data"] = json.loads(data)
                except ValueError:
                    event["data"] = data
                yield event
