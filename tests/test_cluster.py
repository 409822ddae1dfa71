"""`make cluster`'s shorter run (loadtest.cluster --short): the platform on eleven hosts in network
namespaces loses a small host, gains one, fails Redis over and drains the large host under load, and no
accepted job is lost, answered twice or cut off. Needs root (CI runs as root)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loadtest.cluster.netns import supported

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def figures(artifacts_dir):
    ok, why = supported()
    if not ok:
        pytest.skip(f"network namespaces unavailable: {why}")
    directory = artifacts_dir / "cluster"
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    run = subprocess.run([sys.executable, "-m", "loadtest.cluster", "--short", "--dir", str(directory)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    (artifacts_dir / "logs" / "cluster.log").write_text(run.stderr)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no figures (exit {run.returncode}); its log: {run.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_no_accepted_job_is_lost_or_answered_twice(figures):
    assert figures["jobs"] > 20, "the load ran"
    assert figures["lost"] == 0 and figures["failed"] == 0
    assert figures["duplicated_results"] == 0 and figures["mixed_streams"] == 0


def test_a_lost_small_host_s_jobs_run_elsewhere_within_30_s_and_a_new_host_takes_jobs(figures):
    assert figures["host_loss_jobs"] >= 1, "the host was lost in the middle of a job"
    assert figures["host_loss_recovery_s"] <= 30
    assert figures["new_host_first_job_s"] is not None


def test_a_redis_failover_loses_no_accepted_job_and_the_old_master_comes_back_a_replica(figures):
    assert figures["failover_s"] < 30 and figures["failover_lost"] == 0
    # Never a master again, not even until the sentinels demote it: its writes would be wiped (split brain).
    assert figures["old_master_restarted_as"] == "slave"


def test_a_drained_host_cuts_no_stream(figures):
    assert figures["drained_streams"] >= 1, "the large host was streaming when told to stop"
    assert figures["drain_cut_streams"] == 0


def test_everything_the_run_made_is_gone(figures):
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert figures["run"] + "-" not in listed
    assert os.path.exists(os.path.join(ROOT, figures["timeline"])), "the timeline PNG"
