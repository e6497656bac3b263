"""The seam between the shared Producer/Consumer logic and one broker.

A backend moves bytes. It knows nothing of MLOpsMessage, serialisation,
batching policy or logging of outages; it publishes :class:`Record` batches,
hands out :class:`Delivery` batches from a :class:`Subscription` and
acknowledges them. Driver errors are translated here into
:class:`~mlops_async.errors.BusUnavailable` (retriable) or another
:class:`~mlops_async.errors.BusError` before they leave the module.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeVar

import msgspec

from ..errors import BusError, NotSupported

__all__ = [
    "Backend",
    "Delivery",
    "ErrorMap",
    "GroupInfo",
    "Headers",
    "OffsetReset",
    "PartitionLag",
    "Record",
    "Subscription",
    "TopicInfo",
    "cancel_safe",
    "decode_headers",
    "encode_headers",
    "reraise",
    "translate",
]

Headers = tuple[tuple[str, bytes], ...]
T = TypeVar("T")

_HEADERS_ENC = msgspec.msgpack.Encoder()
_HEADERS_DEC = msgspec.msgpack.Decoder(list[tuple[str, bytes]])


def encode_headers(headers: Headers) -> bytes:
    """Headers as one msgpack field, for backends that store records as plain fields."""
    return _HEADERS_ENC.encode(headers)


def decode_headers(raw: bytes) -> Headers:
    """Headers written by :func:`encode_headers`; raises ``msgspec.DecodeError`` otherwise."""
    return tuple(_HEADERS_DEC.decode(raw))


OffsetReset = Literal["earliest", "latest"]


Translation = type[BusError] | Callable[[str, BaseException], BusError]
ErrorMap = Sequence[tuple[Any, Translation]]


def translate(exc: BaseException, what: str, errors: ErrorMap) -> BaseException:
    """Our error for a driver exception that ``errors`` lists, else ``exc`` itself.

    Each entry of ``errors`` is ``(exception types or a predicate, our error class
    or a function (what, exc) -> error)``; the first match wins and the driver's
    exception becomes ``__cause__``. An unlisted exception (a bug, a TypeError)
    comes back unchanged, so it propagates as it is, never disguised as "cannot
    connect". Use as ``raise translate(exc, "fetch", _ERRORS)``.
    """
    if isinstance(exc, BusError):
        return exc
    for match, ours in errors:
        hit = isinstance(exc, match) if isinstance(match, type | tuple) else bool(match(exc))
        if hit:
            if isinstance(ours, type):
                err: BusError = ours(f"{what}: {str(exc) or type(exc).__name__}")
            else:
                err = ours(what, exc)
            err.__cause__ = exc
            return err
    return exc


def reraise(exc: BaseException, what: str, errors: ErrorMap) -> NoReturn:
    """Raise :func:`translate`'s answer: our error chained to the driver's, or ``exc`` as is."""
    err = translate(exc, what, errors)
    if err is exc:
        raise exc
    raise err from exc


async def cancel_safe(awaitable: Awaitable[T]) -> T:
    """Await a driver call so that a cancellation requested meanwhile always propagates.

    CPython 3.11's ``asyncio.wait_for`` (used inside redis-py and aiokafka) can
    return a result to a task that was cancelled while it waited, swallowing
    the cancellation. If the task's cancel count grew during the call and the
    call returned anyway, raise :class:`asyncio.CancelledError` here.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await awaitable
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


class Record(msgspec.Struct, gc=False):
    """One payload to publish (a C-level struct: cheap to create on the hot path)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None

    def __repr__(self) -> str:
        return f"Record(topic={self.topic!r}, key={self.key!r}, size={len(self.value)})"


class Delivery(msgspec.Struct, gc=False):
    """One payload received; ``position`` is the backend's handle for acknowledging it.

    ``value`` is None for a record with a null value (a Kafka tombstone). A
    backend that cannot read a record's envelope (a foreign field, headers
    that are not ours) never raises: it hands the record over with ``fault``
    saying what is wrong, ``value=b""``, and every raw field in ``raw``, so the
    Consumer dead-letters it whole.
    """

    topic: str
    partition: int
    offset: int | str
    value: bytes | None
    key: bytes | None = None
    headers: Headers | None = None
    position: Any = None
    fault: str | None = None
    raw: tuple[tuple[bytes, bytes], ...] | None = None
    #: How many times the broker handed this record out (0: the broker does not count).
    attempts: int = 0
    #: When the broker stored the record (seconds since the epoch), where it says.
    timestamp: float | None = None

    def broker_time(self) -> float | None:
        """``timestamp``, or the time in a Redis stream id (``<ms>-<seq>``)."""
        if self.timestamp is not None:
            return self.timestamp
        if isinstance(self.offset, str):
            ms, dash, _ = self.offset.partition("-")
            if dash and ms.isdigit():
                return int(ms) / 1000
        return None

    def where(self) -> str:
        """Where this came from, for error messages: ``topic[partition]@offset``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def __repr__(self) -> str:
        size = "null" if self.value is None else len(self.value)
        return f"Delivery({self.where()}, size={size})"


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    messages: int | None = None


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end_offset: int
    lag: int
    pending: int = 0


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    topics: tuple[str, ...]
    members: int
    state: str = ""
    lag: tuple[PartitionLag, ...] = field(default=())


class Subscription(ABC):
    """A live read position on some topics, alone or as a member of a group.

    ``epoch`` grows whenever the backend lost some of what it was reading
    (a rebalance took partitions away); the Consumer then drops buffered
    deliveries for which :meth:`owns` is false, since their new owner reads
    them again.
    """

    epoch: int = 0
    #: True when acknowledging costs nothing extra alongside a fetch (same round
    #: trip, or in-process): the Consumer then sends acks with every fetch;
    #: otherwise it batches them (``prefetch`` at a time, or every ``commit_interval``).
    cheap_ack: bool = False
    #: True when deliveries carry the broker's delivery count (``Delivery.attempts``):
    #: the Consumer then dead-letters records handed out too many times.
    counts_deliveries: bool = False
    #: Records a backend may read ahead beyond what a fetch returns (the Consumer
    #: sets it from its read window before each fetch); None: as many as the fetch asked.
    read_ahead: int | None = None
    #: True when :meth:`release` hands records back to the group's other members.
    releases: bool = False

    def owns(self, delivery: Delivery) -> bool:
        """False once ``delivery`` belongs to another group member."""
        return True

    @abstractmethod
    async def fetch(self, max_records: int, timeout: float) -> list[Delivery]:
        """Up to ``max_records`` deliveries; waits at most ``timeout`` s; [] when none came."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Mark deliveries as processed so the group never hands them out again."""

    async def ack_and_fetch(
        self, deliveries: Sequence[Delivery], max_records: int, timeout: float
    ) -> list[Delivery]:
        """:meth:`ack` then :meth:`fetch`; a backend may do both in one round trip.

        If it raises, none of ``deliveries`` may be taken as acknowledged.
        """
        if deliveries:
            await self.ack(deliveries)
        return await self.fetch(max_records, timeout)

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Hand ``deliveries`` back for prompt redelivery (volley's ``on_fail``).

        A backend that cannot raises :class:`NotSupported`; unacknowledged
        deliveries still come back after a crash or a rebalance.
        """
        raise NotSupported(f"{type(self).__name__} cannot hand deliveries back")

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back deliveries this member read but never started, for another member
        to take now (its read window shrank). Only called when :attr:`releases` is True.
        """
        raise NotSupported(f"{type(self).__name__} cannot hand deliveries back")

    @abstractmethod
    async def close(self) -> None:
        """Leave the group; unacknowledged deliveries become available to other members."""


class Backend(ABC):
    """One connection to a broker, used by one Producer, Consumer or Admin."""

    scheme: str = ""

    @classmethod
    def option_names(cls) -> frozenset[str] | None:
        """Every option this backend takes (its own and its driver's), or None if undeclared.

        Declared names let Producer/Consumer/Admin/App reject a misspelled or
        foreign option when they are constructed, naming the closest known ones.
        """
        return None
    #: Largest payload the broker client accepts, if it has a limit; the
    #: Producer lowers its own size limit to it so send() fails early and clearly.
    max_record_size: int | None = None

    @abstractmethod
    async def connect(self) -> None:
        """Open connections; raises BusUnavailable when the broker cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Release every resource; safe to call twice."""

    @abstractmethod
    async def publish(self, records: Sequence[Record]) -> None:
        """Publish a batch and return once the broker confirmed all of it."""

    async def enqueue(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Hand a batch to the client in order; the returned future resolves on confirmation.

        Lets the Producer keep several batches in flight. The default publishes
        fully before returning (no pipelining), which keeps order on backends
        whose batches could overtake each other on separate connections.
        """
        await self.publish(records)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    @abstractmethod
    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        """Open a subscription; ``group=None`` reads every message (broadcast)."""

    # Admin operations: optional, each raises NotSupported unless overridden.
    async def list_topics(self) -> list[TopicInfo]:
        raise NotSupported(f"{self.scheme}:// cannot list topics")

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """How many partitions each of ``topics`` that exists has (missing ones are left out).

        Backends whose ``list_topics`` does more (end offsets) answer from metadata alone.
        """
        wanted = set(topics)
        return {t.name: t.partitions for t in await self.list_topics() if t.name in wanted}

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        raise NotSupported(f"{self.scheme}:// cannot create topics")

    async def delete_topic(self, name: str) -> None:
        raise NotSupported(f"{self.scheme}:// cannot delete topics")

    async def describe_groups(self) -> list[GroupInfo]:
        raise NotSupported(f"{self.scheme}:// cannot describe consumer groups")

    async def group_lag(self, group: str) -> list[PartitionLag]:
        raise NotSupported(f"{self.scheme}:// cannot report consumer-group lag")
