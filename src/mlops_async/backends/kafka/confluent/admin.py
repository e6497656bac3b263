"""Admin operations of the ``kafka+confluent://`` backend, through librdkafka.

Topic and group operations go through librdkafka's ``AdminClient`` (whose
futures are resolved by its own thread); offsets are read by short-lived
consumers that carry a group id but never join the group, on a thread of
their own, so nothing waits on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ....errors import BusError, BusUnavailable, PublishError
from ...base import GroupInfo, PartitionLag, TopicInfo
from .errors import TOPIC_EXISTS, UNKNOWN_TOPIC, code, raise_ours
from .thread import ClientThread, bounded

__all__ = ["ConfluentAdmin"]

log = logging.getLogger("mlops_async.confluent")
T = TypeVar("T")
_Key = tuple[str, int]


class ConfluentAdmin:
    """Topics, groups and lag, for one backend; :meth:`close` releases its thread."""

    def __init__(
        self,
        build_admin: Callable[[], AdminClient],
        build_probe: Callable[[str | None], Consumer],
        timeout: float,
    ) -> None:
        self._build_admin = build_admin
        self._build_probe = build_probe
        self._timeout = timeout
        self._admin: AdminClient | None = None
        self._thread: ClientThread | None = None

    def close(self) -> None:
        """Drop the AdminClient and stop the thread (a call in progress ends on its own)."""
        self._admin = None
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None

    def _client(self) -> AdminClient:
        if self._admin is None:
            self._admin = self._build_admin()
        return self._admin

    async def _await(self, what: str, fut: Future[Any]) -> Any:
        """An AdminClient future (resolved by librdkafka's thread), within bounds."""
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.wrap_future(fut)
        except TimeoutError as exc:
            raise BusUnavailable(f"{what}: no answer within {self._timeout:g} s") from exc
        except BusError:
            raise
        except Exception as exc:
            raise_ours(exc, what)
        finally:
            if self._admin is not None:
                self._admin.poll(0)  # serve its log and error callbacks (never waits)

    async def _blocking(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            self._thread = ClientThread("confluent-admin")
        try:
            return await bounded(self._thread.run(fn, *args), self._timeout + 5, what)
        except BusError:
            raise
        except Exception as exc:
            raise_ours(exc, what)

    async def _topics(self) -> dict[str, int]:
        admin = self._client()
        meta = await self._blocking("list topics", admin.list_topics, None, self._timeout)
        return {name: len(t.partitions) for name, t in meta.topics.items()
                if not name.startswith("__") and t.error is None}

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition counts of those of ``topics`` that exist (metadata only)."""
        wanted = set(topics)
        return {t: n for t, n in (await self._topics()).items() if t in wanted}

    async def list_topics(self) -> list[TopicInfo]:
        """Topics with partition counts and the number of records written (end offsets)."""
        topics = await self._topics()
        where: dict[_Key, int | None] = {(t, p): None for t, n in topics.items()
                                          for p in range(n)}
        ends = await self._blocking("list topics", self._end_offsets, where)
        return [TopicInfo(t, n, sum(ends.get((t, p), 0) for p in range(n)))
                for t, n in sorted(topics.items())]

    async def create_topic(
        self, name: str, partitions: int, replication: int, config: dict[str, str] | None
    ) -> None:
        """Create ``name``; one that exists already is not an error."""
        futures = self._client().create_topics(
            [NewTopic(name, partitions, replication, config=dict(config or {}))],
            operation_timeout=self._timeout)
        try:
            await self._await(f"create topic {name}", futures[name])
        except PublishError as exc:
            if code(exc.__cause__) != TOPIC_EXISTS:
                raise

    async def delete_topic(self, name: str) -> None:
        """Delete ``name``; one that is not there is not an error."""
        futures = self._client().delete_topics([name], operation_timeout=self._timeout)
        try:
            await self._await(f"delete topic {name}", futures[name])
        except (PublishError, BusUnavailable) as exc:
            if code(exc.__cause__) != UNKNOWN_TOPIC:
                raise

    async def describe_groups(self) -> list[GroupInfo]:
        """Every consumer group: state, member count and lag per partition."""
        admin = self._client()
        listed = await self._await("list groups", admin.list_consumer_groups())
        out = []
        for name in sorted({g.group_id for g in listed.valid}):
            state, members = "Unknown", 0
            try:
                # One group per request: a group the broker cannot describe must
                # not hide the others.
                futures = admin.describe_consumer_groups([name])
                desc = await self._await(f"describe group {name}", futures[name])
                state = getattr(desc.state, "name", str(desc.state)).capitalize()
                members = len(desc.members)
            except BusError as exc:
                log.debug("describe group %s: %r", name, exc)
            lag = await self.group_lag(name)
            out.append(GroupInfo(name, tuple(sorted({p.topic for p in lag})), members, state,
                                 tuple(lag)))
        return out

    async def group_lag(self, group: str) -> list[PartitionLag]:
        """Committed offset, end offset and lag of each partition ``group`` committed on."""
        topics = await self._topics()
        tps = [TopicPartition(t, p) for t, n in sorted(topics.items()) for p in range(n)]
        if not tps:
            return []
        what = f"lag of group {group}"
        committed = await self._blocking(what, self._committed, group, tps)
        if not committed:
            return []
        ends = await self._blocking(what, self._end_offsets,
                                    {k: c for k, (c, _) in committed.items()})
        out = []
        for (t, p), (c, start) in sorted(committed.items()):
            base = c if c is not None else start
            end = ends[(t, p)]
            out.append(PartitionLag(t, p, c, end, max(0, end - base)))
        return out

    # -- on the admin thread ------------------------------------------------------

    def _committed(
        self, group: str, tps: list[TopicPartition]
    ) -> dict[_Key, tuple[int | None, int]]:
        """(committed offset or None, log start) of each partition of the topics the
        group committed on, read by a consumer that carries the group id but never joins."""
        probe = self._build_probe(group)
        try:
            got = probe.committed(tps, timeout=self._timeout)
            by_topic: dict[str, list[TopicPartition]] = {}
            for tp in got:
                by_topic.setdefault(tp.topic, []).append(tp)
            out: dict[_Key, tuple[int | None, int]] = {}
            for topic, parts in by_topic.items():
                if not any(tp.offset >= 0 for tp in parts):
                    continue
                for tp in parts:
                    low, _ = probe.get_watermark_offsets(tp, timeout=self._timeout)
                    out[(topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, low)
            return out
        finally:
            probe.close()

    def _end_offsets(self, where: dict[_Key, int | None]) -> dict[_Key, int]:
        """End offsets, taking the fetch high watermark where it is larger.

        Some Kafka-protocol brokers answer ListOffsets(latest) with the start of
        the last record batch + 1; the high watermark in a fetch response is
        always right, so read from each partition and take the larger.
        """
        if not where:
            return {}
        probe = self._build_probe(None)
        try:
            ends: dict[_Key, int] = {}
            for (t, p) in where:
                _, ends[(t, p)] = probe.get_watermark_offsets(TopicPartition(t, p),
                                                              timeout=self._timeout)
            probe.assign([TopicPartition(t, p, c if c is not None and c >= 0
                                         else OFFSET_BEGINNING)
                          for (t, p), c in where.items()])
            deadline = time.monotonic() + 3.0
            pending = {k for k, v in ends.items() if v > 0}
            while pending and time.monotonic() < deadline:
                for m in probe.consume(100, 0.2):
                    pending.discard((m.topic() or "", m.partition() or 0))
                for key in list(pending):
                    _, high = probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    if high > 0 and high >= ends[key]:
                        pending.discard(key)
            for key in ends:
                with contextlib.suppress(KafkaException):
                    _, high = probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    ends[key] = max(ends[key], high)
            return ends
        finally:
            probe.close()
