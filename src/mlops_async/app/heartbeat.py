"""A small stats heartbeat per running app replica, for ``mlops-async top``.

Every ``heartbeat`` seconds an app publishes a :class:`ReplicaStats` record on
``mlops.replicas`` (on its default bus): which process it is, what it has
processed and published, its rates and its last error. ``top`` shows one row
per replica, so a stage run with ``--replicas 4`` shows 4 rows, on any host.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import BusError
from ..producer import Producer

__all__ = ["STATS_TOPIC", "Heartbeat", "ReplicaStats"]

log = logging.getLogger("mlops_async.app")

STATS_TOPIC = "mlops.replicas"


class ReplicaStats(msgspec.Struct, frozen=True, kw_only=True):
    """One replica's counters at ``at`` (seconds since the epoch)."""

    app: str
    stage: str
    replica: str
    host: str
    pid: int
    processed: int
    failed: int
    published: int
    in_rate: float
    out_rate: float
    last_error: str = ""
    at: float = 0.0
    every: float = 5.0
    state: str = "running"


class Heartbeat:
    """Publishes the stats ``read()`` returns every ``every`` seconds until closed."""

    def __init__(self, app: str, stage: str, producer: Producer[Any], every: float,
                 read: Callable[[], tuple[int, int, int, str]]) -> None:
        self.app = app
        self.stage = stage
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10_000:04d}"
        self.producer = producer
        self.every = every
        self.read = read
        self._task: asyncio.Task[None] | None = None
        self._last = (time.monotonic(), 0, 0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.app}.heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self._beat("stopped")
        await self.producer.close()

    def stats(self, state: str = "running") -> ReplicaStats:
        processed, failed, published, last_error = self.read()
        now = time.monotonic()
        then, p0, o0 = self._last
        dt = max(now - then, 1e-9)
        self._last = (now, processed, published)
        return ReplicaStats(
            app=self.app, stage=self.stage, replica=self.replica,
            host=socket.gethostname(), pid=os.getpid(), processed=processed, failed=failed,
            published=published, in_rate=(processed - p0) / dt, out_rate=(published - o0) / dt,
            last_error=last_error[:300], at=time.time(), every=self.every, state=state,
        )

    async def _beat(self, state: str = "running") -> None:
        try:
            await self.producer.send(self.stats(state), topic=STATS_TOPIC)
        except BusError as exc:  # stats are best effort: never stop the app for them
            log.debug("heartbeat of %s: %s", self.app, exc)

    async def _run(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(self.every)
