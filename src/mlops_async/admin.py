"""Admin: topics and consumer groups, the same calls on every backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._client import AsyncResource, open_backend, where_to
from .backends import Backend, GroupInfo, PartitionLag, TopicInfo
from .errors import BusClosed

__all__ = ["Admin"]


class Admin(AsyncResource):
    """Manage topics and inspect consumer groups.

    A method the backend cannot support raises
    :class:`~mlops_async.errors.NotSupported`.
    """

    def __init__(
        self,
        url: str | None = None,
        orchestrator: str | None = None,
        *,
        orchestrator_endpoint: str | None = None,
        backend: Backend | None = None,
        **client_options: Any,
    ) -> None:
        url, orchestrator, orchestrator_endpoint, client_options = where_to(
            url, orchestrator, orchestrator_endpoint, client_options)
        self._url = url
        self._orchestrator = orchestrator
        self._endpoint = orchestrator_endpoint
        self._client_options = client_options
        self._backend = backend
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise BusClosed("admin is closed")
        if self._started:
            return
        if self._backend is None:
            self._backend = await open_backend(
                self._url, self._orchestrator, self._endpoint, self._client_options
            )
        await self._backend.connect()
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._backend is not None:
            await self._backend.close()

    async def _ready(self) -> Backend:
        if not self._started:
            await self.start()
        assert self._backend is not None
        return self._backend

    async def list_topics(self) -> list[TopicInfo]:
        """Every topic the broker knows (internal ones excluded)."""
        return await (await self._ready()).list_topics()

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of ``topics`` has; topics that do not exist are left out."""
        return await (await self._ready()).partition_counts(topics)

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        """Create ``name``; creating a topic that exists is not an error."""
        await (await self._ready()).create_topic(name, partitions, replication, config)

    async def delete_topic(self, name: str) -> None:
        """Delete ``name`` and everything in it; deleting a missing topic is not an error."""
        await (await self._ready()).delete_topic(name)

    async def describe_groups(self) -> list[GroupInfo]:
        """Every consumer group with its members and lag."""
        return await (await self._ready()).describe_groups()

    async def group_lag(self, group: str) -> list[PartitionLag]:
        """Per topic partition: committed offset, end offset and lag of ``group``."""
        return await (await self._ready()).group_lag(group)
