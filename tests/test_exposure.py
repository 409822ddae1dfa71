"""Nothing is exposed by default: the web app refuses to run keyless on an address other machines
reach, Flower refuses to leave loopback without a login, and the Redis `make run` starts is bounded
and persistent."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from conftest import ROOT
from helpers import app_with, free_port
from monitoring.flower import exposure_error
from settings import get_settings, is_loopback


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                           ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False),
                                           ("::", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_the_web_app_refuses_to_run_keyless_on_an_open_address():
    with pytest.raises(ValueError, match="ALLOW_OPEN_ACCESS=1"):
        app_with(host="0.0.0.0")
    assert app_with(host="0.0.0.0", allow_open_access=True)  # on purpose
    assert app_with(host="0.0.0.0", api_keys_required=True)  # keys on


def test_flower_refuses_an_open_address_without_a_login():
    settings = get_settings()
    assert exposure_error(settings.replace(flower_host="127.0.0.1")) is None
    assert "FLOWER_BASIC_AUTH" in exposure_error(settings.replace(flower_host="0.0.0.0"))
    assert exposure_error(settings.replace(flower_host="0.0.0.0", flower_basic_auth="ops:secret")) is None
    done = subprocess.run([sys.executable, "-m", "monitoring.flower", "--port=1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "FLOWER_HOST": "0.0.0.0", "FLOWER_BASIC_AUTH": ""})
    assert done.returncode == 1 and "flower not started" in done.stderr


def test_the_redis_make_run_starts_is_bounded_and_keeps_an_append_only_file(tmp_path):
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "RUN_DIR": str(tmp_path),
           "VENV": str(ROOT / ".venv"), "REDIS_MAXMEMORY": "64mb"}
    subprocess.run([str(ROOT / "deploy" / "ensure-redis.sh")], cwd=tmp_path, env=env, check=True, timeout=60)
    client = redis.Redis(port=port)
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 2**20)}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.shutdown(nosave=True)
