"""What the kafka+confluent:// tests share: URLs, topics, producing, a worker process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlops_async import Admin, Consumer, MLOpsMessage, Producer

from ..backends.conftest import CONFLUENT_CONSUMER_OPTIONS
from ..conftest import make_msg

ROOT = Path(__file__).resolve().parents[2]


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def consumer(url: str, topic: str, group: str | None, **kw: object) -> Consumer[MLOpsMessage]:
    return Consumer(
        url,
        topic=topic,
        group=group,
        auto_offset_reset="earliest",
        **{**CONFLUENT_CONSUMER_OPTIONS, **kw},
    )  # type: ignore[arg-type]


async def make_topic(url: str, partitions: int) -> str:
    topic = name("ct")
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=partitions)
    return topic


async def produce(url: str, topic: str, n: int, *, start: int = 0) -> None:
    async with Producer(url, topic=topic) as p:
        for i in range(start, start + n):
            await p.send(make_msg(i), key=str(i))
        await p.flush()


def ids(msgs: list[MLOpsMessage]) -> list[int]:
    return [m.additional_arguments["i"] for m in msgs]


def start_worker(
    url: str, topic: str, group: str, out: str, delay: float = 0.0
) -> subprocess.Popen[bytes]:
    """``tests.worker`` in a process of its own: one line per message it finished."""
    with open(out + ".err", "wb") as err:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            [sys.executable, "-m", "tests.worker", url, topic, group, out, str(delay),
             json.dumps(CONFLUENT_CONSUMER_OPTIONS)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def lines(path: str) -> list[int]:
    text = Path(path).read_text() if os.path.exists(path) else ""
    return [int(x) for x in text.split() if x.isdigit()]


async def wait_ready(paths: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(p) and "ready" in Path(p).read_text() for p in paths):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("workers did not start")
