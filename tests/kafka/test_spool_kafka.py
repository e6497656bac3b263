"""Kafka: a lenient producer SIGKILLed during an outage loses nothing it accepted.

The child starts with no broker, sends keyed messages (each is in the spool
when ``send`` returns: it prints the index only then) and is killed without
closing. A new producer on the same spool, once the broker is up, delivers
every one of them first and in order (one key: one partition, so order is
visible to the consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from mlops_async import Consumer, MLOpsMessage, Producer

from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
from ..brokers import tansu_server

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, sys
    from mlops_async import Producer
    from tests.conftest import make_msg

    async def main(url, spool, n):
        p = Producer(url, topic="outbox", spool=spool, flush_timeout=0.1, connect_timeout=1.0)
        await p.start()
        for i in range(n):
            await p.send(make_msg(i), key="one-key", headers={"trace": str(i)})
            print(i, flush=True)  # only once send() returned: accepted
        await asyncio.sleep(3600)  # killed here, never closed

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


async def test_sigkill_during_an_outage_then_a_new_producer_delivers_everything_in_order(
    tmp_path: Path,
) -> None:
    server = tansu_server()  # not started: the broker is away
    url = f"kafka://127.0.0.1:{server.port}"
    spool = tmp_path / "spool"
    n = 200
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(spool), str(n)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        accepted = []
        for line in child.stdout:
            accepted.append(int(line))
            if len(accepted) == n:
                break
        assert accepted == list(range(n))
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
        async with Producer(url, topic="outbox", spool=spool, connect_timeout=5.0) as p:
            await p.flush(timeout=60)  # the spool goes first: an explicit bound, not a stall
            assert p.stats()["outage"] is False
        consumer: Consumer[MLOpsMessage] = Consumer(
            url, topic="outbox", group=f"g-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest", **KAFKA_CONSUMER_OPTIONS)  # type: ignore[arg-type]
        async with consumer as c:
            got: list[int] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    while len(got) < n:
                        got += [m.additional_arguments["i"]
                                for m in await c.get_messages(timeout=1)]
        assert got == list(range(n))  # every accepted message, once, in order
    finally:
        server.stop()
