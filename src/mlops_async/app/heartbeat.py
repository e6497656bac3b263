"""A small stats heartbeat per running app replica, for ``mlops-async top`` and ``ui``.

Every ``heartbeat`` seconds an app publishes a :class:`ReplicaStats` record on
``mlops.replicas`` (on its default bus): which process it is, which topics it
reads and writes, what it has processed and published, its rates, its state
and its last error. ``top`` shows one row per replica, so a stage run with
``--replicas 4`` shows 4 rows, on any host; ``ui`` draws the graph from it.

States: ``running`` (did work since the last beat), ``idle`` (did none),
``draining`` (stopping: finishing what it holds), then a last beat ``ended``
(its finite run is over) or ``stopped``. A replica whose beats stop without a
last one is *silent* to whoever watches (see :func:`replica_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import BusError
from ..producer import Producer

__all__ = ["LIVE_STATES", "STATS_TOPIC", "Heartbeat", "ReplicaStats", "replica_state"]

log = logging.getLogger("mlops_async.app")

STATS_TOPIC = "mlops.replicas"

#: The states of a replica that still beats.
LIVE_STATES = frozenset({"running", "idle", "draining"})


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
    #: Topics the replica reads and writes (its handlers' inputs and outputs).
    inputs: list[str] = []
    outputs: list[str] = []
    #: The finite run it belongs to ("" outside one).
    run: str = ""
    #: Its consumer group ("": the app's name).
    group: str = ""


def replica_state(beat: ReplicaStats, now: float, silent_after: float = 3.0) -> str:
    """The state of the replica whose latest beat is ``beat``: its own, or ``silent``
    once ``silent_after`` beat intervals passed without one (and no last beat came)."""
    if beat.state in LIVE_STATES and now - beat.at > silent_after * beat.every:
        return "silent"
    return beat.state


class Heartbeat:
    """Publishes the stats ``read()`` returns every ``every`` seconds until closed."""

    def __init__(self, app: str, stage: str, producer: Producer[Any], every: float,
                 read: Callable[[], tuple[int, int, int, str]], *,
                 inputs: list[str] | None = None, outputs: list[str] | None = None,
                 run: str = "", group: str = "",
                 draining: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.stage = stage
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10_000:04d}"
        self.producer = producer
        self.every = every
        self.read = read
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.run = run
        self.group = group
        self.draining = draining
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # set to beat at once (a change of state)
        self._last = (time.monotonic(), 0, 0)
        self._failed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.app}.heartbeat")

    def nudge(self) -> None:
        """Beat now rather than at the next interval (the state changed)."""
        self._now.set()

    async def close(self, last: str = "stopped") -> None:
        """Stop beating after a last beat in state ``last`` (``stopped`` or ``ended``)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            await self._beat(last)
        await self.producer.close()

    def stats(self, state: str | None = None) -> ReplicaStats:
        processed, failed, published, last_error = self.read()
        now = time.monotonic()
        then, p0, o0 = self._last
        dt = max(now - then, 1e-9)
        moved = processed != p0 or published != o0 or failed != self._failed
        self._last, self._failed = (now, processed, published), failed
        if state is None:
            state = "draining" if self.draining() else "running" if moved else "idle"
        return ReplicaStats(
            app=self.app, stage=self.stage, replica=self.replica,
            host=socket.gethostname(), pid=os.getpid(), processed=processed, failed=failed,
            published=published, in_rate=(processed - p0) / dt, out_rate=(published - o0) / dt,
            last_error=last_error[:300], at=time.time(), every=self.every, state=state,
            inputs=self.inputs, outputs=self.outputs, run=self.run, group=self.group,
        )

    async def _beat(self, state: str | None = None) -> None:
        try:
            await self.producer.send(self.stats(state), topic=STATS_TOPIC)
        except BusError as exc:  # stats are best effort: never stop the app for them
            log.debug("heartbeat of %s: %s", self.app, exc)

    async def _run(self) -> None:
        while True:
            await self._beat()
            # Sleeps until the next beat, or until nudged.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self.every)
            self._now.clear()
