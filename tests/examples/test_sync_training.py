"""examples/sync_training.py: a synchronous scikit-learn loop reporting through mlops_async.sync."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlops_async import MessageType
from mlops_async.sync import Consumer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sync_training.py"


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_demo_reports_every_epoch_and_the_metrics() -> None:
    out = run("--demo", "--epochs", "3")
    lines = out.splitlines()
    assert lines[0].startswith("trained run-1: accuracy ")
    assert [ln.split()[1] for ln in lines if ln.startswith("metrics")] == [
        "epoch=1", "epoch=2", "epoch=3"]
    assert [ln.split()[1] for ln in lines if ln.startswith("status")] == [
        "START", "PROGRESS", "PROGRESS", "PROGRESS", "COMPLETE"]


@pytest.mark.redis
def test_against_redis_a_consumer_elsewhere_sees_the_run(redis_url: str) -> None:
    run_id = f"run-{uuid.uuid4().hex[:6]}"
    run("--url", redis_url, "--run", run_id, "--epochs", "4")
    with Consumer(redis_url, topic="training.status", auto_offset_reset="earliest") as c:
        statuses = [m for m in c.get_messages(timeout=2.0) if m.correlation_id == run_id]
    assert [m.msg_type for m in statuses] == [
        MessageType.START, *[MessageType.PROGRESS] * 4, MessageType.COMPLETE]
    assert statuses[-1].additional_arguments["epochs"] == 4
    assert 0.5 < statuses[-1].additional_arguments["accuracy"] <= 1.0
