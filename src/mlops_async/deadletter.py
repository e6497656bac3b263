"""Dead letters: the original bytes of a message that could not be handled, and why."""

from __future__ import annotations

import sys
import time

import msgspec

from .backends import Delivery, Record

__all__ = ["DeadLetter", "dead_letter_record", "letter_size_limit", "make_dead_letter"]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message that failed, kept verbatim with the reason.

    Read them with ``Consumer(..., schema=DeadLetter)``; ``original`` holds the
    exact bytes that were received, so a fixed consumer can replay them.
    """

    original: bytes
    error_type: str
    error: str
    source_topic: str
    partition: int | None = None
    offset: str | None = None
    key: bytes | None = None
    attempts: int = 1
    handler: str | None = None
    failed_at: float = 0.0
    topic: str | None = None
    #: The original record's headers, verbatim (a header may have a null value).
    headers: list[tuple[str, bytes | None]] | None = None
    #: Every raw field of a record whose envelope could not be read (e.g. a Redis
    #: stream entry written by a foreign client); ``original`` is then empty.
    fields: list[tuple[bytes, bytes]] | None = None
    #: True when the original value was null (a tombstone), not empty bytes.
    null_value: bool = False


_ENCODE = msgspec.msgpack.Encoder().encode
_NO_LIMIT = sys.maxsize


def letter_size_limit(schema: object) -> int | None:
    """The default size limit of a reader of ``schema``: none for dead letters, else None.

    A record goes to the dead letters for being over a reader's limit, so its
    letter is over that limit too; a dead-letter reader takes every letter the
    broker holds (the broker already bounded its size), or it would send the
    letter on to ``<topic>.dlq.dlq``. ``max_message_size=`` still sets a limit.
    """
    return _NO_LIMIT if isinstance(schema, type) and issubclass(schema, DeadLetter) else None


def make_dead_letter(
    delivery: Delivery, error: BaseException, *, attempts: int = 1, handler: str | None = None
) -> tuple[DeadLetter, tuple[tuple[str, bytes], ...]]:
    """The :class:`DeadLetter` for ``delivery`` and the headers that summarise it."""
    value = delivery.value
    letter = DeadLetter(
        original=b"" if value is None else bytes(value),
        error_type=type(error).__name__,
        error=str(error)[:2000],
        source_topic=delivery.topic,
        partition=delivery.partition,
        offset=str(delivery.offset),
        key=delivery.key,
        attempts=attempts,
        handler=handler,
        failed_at=time.time(),
        headers=list(delivery.headers) if delivery.headers else None,
        fields=list(delivery.raw) if delivery.raw else None,
        null_value=value is None,
    )
    headers = (
        ("x-error-type", letter.error_type.encode()),
        ("x-error", letter.error[:500].encode()),
        ("x-source-topic", delivery.topic.encode()),
        ("x-source-position", delivery.where().encode()),
        ("x-attempts", str(attempts).encode()),
        ("x-handler", (handler or "").encode()),
        ("x-failed-at", repr(letter.failed_at).encode()),
    )
    return letter, headers


def dead_letter_record(
    dlq_topic: str, delivery: Delivery, error: BaseException, *, attempts: int = 1,
    handler: str | None = None,
) -> Record:
    """The record that carries ``delivery`` to ``dlq_topic`` (msgpack envelope v1)."""
    letter, headers = make_dead_letter(delivery, error, attempts=attempts, handler=handler)
    return Record(dlq_topic, b"\x01" + _ENCODE(letter), delivery.key, headers)
