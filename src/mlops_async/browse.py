"""Looking at queues without touching them: ``mlops-async peek`` and ``dlq list/show``.

Everything here reads with a peek (:class:`Consumer` ``peek=True``): no group,
from the earliest record, nothing acknowledged to anyone and nothing
dead-lettered, so looking never changes what production sees.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Collection
from typing import Any

import msgspec

from .admin import Admin
from .codec import Codec
from .consumer import Consumer
from .deadletter import DeadLetter
from .endpoint import redact
from .errors import ConfigurationError, DecodeError, MessageTooLarge

__all__ = ["letter_id", "peek_lines", "read_dead_letters", "require_topic", "show_letter"]

_JSON = msgspec.json.Encoder()


def letter_id(partition: int, offset: int | str) -> str:
    """A record's id in its topic, as ``list`` prints it and ``show``/``replay --id`` take it."""
    return f"{partition}@{offset}"


async def require_topic(url: str, topic: str, client_options: dict[str, Any]) -> None:
    """Raise :class:`ConfigurationError` if ``topic`` does not exist on the bus at ``url``."""
    async with Admin(url, **client_options) as admin:
        names = sorted(t.name for t in await admin.list_topics())
    if topic in names:
        return
    hint = ""
    if topic.endswith(".dlq"):
        dlqs = [n for n in names if n.endswith(".dlq")]
        hint = (f"; dead-letter queues there: {', '.join(dlqs)}" if dlqs
                else "; there are no dead-letter queues there")
    raise ConfigurationError(f"no queue {topic!r} on {redact(url)}{hint}")


async def read_dead_letters(
    url: str, dlq_topic: str, *, error_types: Collection[str] = (), limit: int | None = None,
    timeout: float = 2.0, **client_options: Any,
) -> list[tuple[str, DeadLetter]]:
    """The dead letters in ``dlq_topic``, oldest first, each with its id (a peek).

    ``error_types`` keeps only letters of those types (``Reject``, ``DecodeError``...).
    Raises :class:`ConfigurationError` if the queue does not exist.
    """
    await require_topic(url, dlq_topic, client_options)
    out: list[tuple[str, DeadLetter]] = []
    async with Consumer(url, topic=dlq_topic, schema=DeadLetter, peek=True,
                        **client_options) as c:
        while limit is None or len(out) < limit:
            letters = await c.get_messages(timeout=timeout)
            if not letters:
                break
            for x, d in zip(letters, c.envelopes, strict=True):
                if not error_types or x.error_type in error_types:
                    out.append((letter_id(d.partition, d.offset), x))
    return out[:limit]


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def letter_line(lid: str, x: DeadLetter) -> str:
    """One line of ``dlq list``: id, when, error type, where from, the error."""
    where = f"{x.source_topic}[{x.partition}]@{x.offset}"
    error = " ".join(x.error.split())
    return f"{lid}  {_when(x.failed_at)}  {x.error_type}  {where}  {error[:160]}"


def show_letter(lid: str, x: DeadLetter) -> str:
    """``dlq show``: every field of one letter; the original decoded when it can be."""
    lines = [f"id: {lid}", f"error_type: {x.error_type}", f"error: {x.error}",
             f"source: {x.source_topic}[{x.partition}]@{x.offset}",
             f"failed_at: {_when(x.failed_at)}", f"attempts: {x.attempts}",
             f"handler: {x.handler or '-'}"]
    if x.key is not None:
        lines.append(f"key: {x.key!r}")
    for name, value in x.headers or ():
        lines.append(f"header {name}: {value!r}")
    for field, value in x.fields or ():
        lines.append(f"field {field!r}: {value!r}")
    if x.null_value:
        lines.append("original: null (a tombstone)")
    else:
        try:
            readable = Codec(dict).decode(x.original)
            lines.append(f"original: {_JSON.encode(readable).decode()}")
        except DecodeError as exc:
            lines.append(f"original ({len(x.original)} bytes, {exc.reason}): {x.original!r}")
    return "\n".join(lines)


async def peek_lines(url: str, topic: str, *, limit: int | None, timeout: float,
                     latest: bool = False, **client_options: Any) -> AsyncIterator[str]:
    """``mlops-async peek``: one line per record, ``<partition>@<offset>  <JSON>``.

    Stops after ``limit`` records, or once nothing arrived for ``timeout`` seconds.
    A record that is not a readable object is shown as such, never dead-lettered.
    """
    await require_topic(url, topic, client_options)
    async with Consumer(url, topic=topic, schema=dict, peek=True, on_invalid="raise",
                        auto_offset_reset="latest" if latest else "earliest",
                        **client_options) as c:
        shown = 0
        while limit is None or shown < limit:
            try:
                async with asyncio.timeout(timeout):
                    msg, d = await c.receive()
                line = _JSON.encode(msg).decode()
            except TimeoutError:
                return
            except (DecodeError, MessageTooLarge) as exc:
                d = exc.delivery  # type: ignore[assignment]
                line = f"(not readable: {exc})"
            yield f"{letter_id(d.partition, d.offset)}  {line}"
            shown += 1
