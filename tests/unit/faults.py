"""A backend wrapper that injects faults into the real in-memory bus.

Used only for the producer/consumer logic around outages; real broker
outages are tested against real Kafka and Redis servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mlops_async.backends import Delivery, Record, Subscription
from mlops_async.backends.base import OffsetReset
from mlops_async.backends.memory import MemoryBackend
from mlops_async.errors import BusUnavailable, PublishError


class FaultyBackend(MemoryBackend):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        self.refuse = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.publish_calls = 0
        self.batches: list[int] = []

    async def connect(self) -> None:
        if self.down:
            raise BusUnavailable("connection refused (injected)")
        await super().connect()

    async def publish(self, records: Sequence[Record]) -> None:
        self.publish_calls += 1
        await self.gate.wait()
        if self.down:
            raise BusUnavailable("connection refused (injected)")
        if self.refuse:
            raise PublishError("topic authorization failed (injected)")
        self.batches.append(len(records))
        await super().publish(records)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        if self.down:
            raise BusUnavailable("connection refused (injected)")
        sub = await super().subscribe(
            topics, group=group, auto_offset_reset=auto_offset_reset
        )
        return _FaultySub(self, sub)


class _FaultySub(Subscription):
    def __init__(self, backend: FaultyBackend, inner: Subscription) -> None:
        self.backend = backend
        self.inner = inner

    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        if self.backend.down:
            raise BusUnavailable("connection refused (injected)")
        return await self.inner.fetch(max_records, timeout)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self.backend.down:
            raise BusUnavailable("connection refused (injected)")
        await self.inner.ack(deliveries)

    async def close(self) -> None:
        await self.inner.close()
