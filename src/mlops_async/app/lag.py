"""Consumer-group lag of an app's inputs, for its metrics: one Admin per broker, kept open."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..admin import Admin
from ..errors import BusError
from ..metrics import Metrics
from ..queues import Queue

__all__ = ["LagWatcher"]

log = logging.getLogger("mlops_async.app")


class LagWatcher:
    """Every ``every`` seconds, sets the lag gauge of each input queue."""

    def __init__(self, group: str, inputs: list[tuple[Queue, str]], metrics: Metrics,
                 client_options: dict[str, Any], every: float = 5.0) -> None:
        self.group = group
        self.inputs = inputs  # (queue, its URL)
        self.metrics = metrics
        self.client_options = client_options
        self.every = every
        self._admins: dict[str, Admin] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lag.{self.group}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        admins, self._admins = self._admins, {}
        for admin in admins.values():
            await admin.close()

    async def _admin(self, url: str) -> Admin:
        admin = self._admins.get(url)
        if admin is None:
            admin = Admin(url, **self.client_options)
            await admin.start()
            self._admins[url] = admin
        return admin

    async def _run(self) -> None:
        while True:
            for queue, url in self.inputs:
                try:
                    lag = await (await self._admin(url)).group_lag(self.group)
                    self.metrics.set_lag(queue.name,
                                         sum(p.lag for p in lag if p.topic == queue.topic))
                except BusError as exc:  # NotSupported, or the broker is away
                    log.debug("lag of %s: %s", queue.name, exc)
            await asyncio.sleep(self.every)
