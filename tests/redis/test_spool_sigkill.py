"""A lenient producer SIGKILLed during an outage loses nothing it accepted (its spool keeps it)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlops_async import Consumer, Producer

from ..brokers import redis_server

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, sys
    from mlops_async import Producer
    from tests.conftest import make_msg

    async def main(url, spool, n):
        p = Producer(url, topic="outbox", spool=spool, flush_timeout=0.1)
        await p.start()
        for i in range(n):
            await p.send(make_msg(i))  # returns once the message is on disk
            print(i, flush=True)
        await asyncio.sleep(3600)  # killed here, never closed

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


async def test_sigkill_during_an_outage_then_a_new_producer_delivers_everything(
    tmp_path: Path,
) -> None:
    server = redis_server()  # not started: the broker is away
    url = f"redis://127.0.0.1:{server.port}/0"
    n = 200
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(tmp_path / "spool"), str(n)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        # The child prints each index once send() returned (the message is accepted).
        accepted = [child.stdout.readline().strip() for _ in range(n)]
        assert accepted == [str(i) for i in range(n)]
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    server.start()
    try:
        async with Producer(url, topic="outbox", spool=tmp_path / "spool") as p:
            async with Consumer(url, topic="outbox", auto_offset_reset="earliest") as c:
                got: list[int] = []
                async with asyncio.timeout(30):
                    while len(got) < n:
                        got += [m.additional_arguments["i"]
                                for m in await c.get_messages(timeout=0.2)]
            assert got == list(range(n))  # every accepted message, in order, once
            assert p.stats()["outage"] is False
    finally:
        server.stop()
