"""A process that forgets to close a kafka+confluent:// client still exits.

librdkafka's calls run on threads of the backend's own; none of them may keep
the interpreter alive once the program is done (kafka:// has no threads, so a
forgotten close() never hung a process there either).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ._helpers import ROOT

pytestmark = pytest.mark.kafka

CHILD = textwrap.dedent("""
    import asyncio, sys
    from mlops_async import Consumer, Producer
    from tests.conftest import make_msg

    async def main(url):
        p = Producer(url, topic="forgotten")
        await p.send(make_msg(1), flush=True)
        c = Consumer(url, topic="forgotten", auto_offset_reset="earliest")
        assert await c.get_messages(timeout=10)
        print("done", flush=True)  # and neither is closed

    asyncio.run(main(sys.argv[1]))
""")


def test_a_process_that_never_closes_its_clients_still_exits(kafka_bootstrap: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"kafka+confluent://{kafka_bootstrap}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the process did not exit by itself: {out!r} {err[-2000:]!r}")
    assert "done" in out, err[-2000:]
