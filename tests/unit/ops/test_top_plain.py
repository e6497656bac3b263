"""`mlops-async top` outside a terminal: a plain table, and `--once` prints one and exits.

Under `timeout 6 mlops-async top ...` (a pipe, a CI log) the live view printed
nothing at all: rich's live display only draws on a terminal.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import pytest

from mlops_async.top import run_top

from .test_top import fill


async def test_run_top_once_prints_a_plain_table() -> None:
    url = f"memory://top-{uuid.uuid4().hex[:6]}"
    await fill(url, "orders", "billing")
    out = io.StringIO()
    await run_top(url, interval=0.05, once=True, plain=True, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["queue", "in/s", "out/s"]
    orders = next(x for x in lines if x.startswith("orders"))
    assert " 52 " in orders and " 20 " in orders and "billing" in orders
    assert "DecodeError" in orders
    assert "\x1b[" not in out.getvalue()  # no terminal codes in a log


def _cli(redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mlops_async", "top", "--url", redis_url,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MLOPS_BUS_URL": ""})


@pytest.mark.redis
def test_top_once_exits_after_one_table(redis_url: str) -> None:
    import asyncio

    topic = f"top-{uuid.uuid4().hex[:6]}"
    asyncio.run(fill(redis_url, topic, "billing"))
    proc = _cli(redis_url, "--once", "--interval", "0.2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines()[0].startswith("queue")
    assert any(line.startswith(topic) for line in out.splitlines())


@pytest.mark.redis
def test_top_in_a_pipe_prints_tables_as_it_goes(redis_url: str) -> None:
    import asyncio

    topic = f"top-{uuid.uuid4().hex[:6]}"
    asyncio.run(fill(redis_url, topic, "billing"))
    proc = _cli(redis_url, "--interval", "0.2")
    try:
        assert proc.stdout is not None
        # Flushed as it goes: read until our queue's row shows up (the session's shared
        # Redis holds every other test's queues too, so a table can be long).
        tables, found = 0, False
        for _ in range(100_000):
            line = proc.stdout.readline()
            assert line, "top ended"
            tables += line.startswith("queue")
            if line.startswith(topic):
                found = True
                break
        assert tables >= 1 and found
    finally:
        proc.kill()
        proc.communicate()
