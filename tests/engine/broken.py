"""A plugin backend whose reads fail with an unexpected error, and an app that uses it.

``broken://`` connects and publishes like a real broker, but every fetch raises
a RuntimeError (a bug in a plugin, a driver's unexpected exception). The app
must neither die silently nor spin forever: it logs, restarts its pump with
backoff, then stops with AppFailed, and ``mlops-async run`` exits non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops_async import App
from mlops_async.backends import Backend, Delivery, Record, Subscription, register_backend
from mlops_async.backends.base import OffsetReset


class _Broken(Subscription):
    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        raise RuntimeError("disk on fire")

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def close(self) -> None:
        return None


class BrokenBackend(Backend):
    scheme = "broken"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BrokenBackend:
        return cls()

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, records: Sequence[Record]) -> None:
        return None

    async def subscribe(
        self, topics: Sequence[str], *, group: str | None, auto_offset_reset: OffsetReset
    ) -> Subscription:
        return _Broken()


register_backend("broken", BrokenBackend)


async def _nothing(_: float) -> None:
    return None


# Restarts without waiting, so the CLI test does not sit through the backoff.
app = App("broken", url="broken://", sleep=_nothing)


@app.handler(input="in", outputs=["out"])
async def relay(msg: Any) -> list[tuple[str, Any]]:
    return [("out", msg)]
