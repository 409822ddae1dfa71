"""Helpers shared by the tests."""
from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_job(client, job_id: str, timeout: float = 180) -> dict:
    """Poll the job API until the job ends; return the last view."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").get_json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {view}")
