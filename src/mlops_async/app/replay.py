"""Dead letters back to their source topics, after a fix."""

from __future__ import annotations

import logging
from typing import Any

from ..backends import Record, create_backend
from ..consumer import Consumer
from ..deadletter import DeadLetter
from ..endpoint import resolve_url

__all__ = ["replay_dead_letters"]

log = logging.getLogger("mlops_async.app")


async def replay_dead_letters(
    url: str, dlq_topic: str, *, group: str = "mlops-dlq-replay", limit: int | None = None,
    timeout: float = 2.0, **client_options: Any,
) -> int:
    """Send dead letters back to their source topics, byte for byte; returns how many.

    Each is acknowledged on the dead-letter queue only after its original was
    confirmed by the broker, so a crash mid-replay replays again, never loses.
    A letter whose record could not be read at all (raw fields of a foreign
    Redis entry) or had a null value cannot be sent back as a record: it is
    left where it is in the dead-letter topic and logged.
    """
    target = create_backend(await resolve_url(url), **client_options)
    await target.connect()
    done = replayed = 0
    try:
        async with Consumer(url, topic=dlq_topic, group=group, schema=DeadLetter,
                            commit="manual", auto_offset_reset="earliest",
                            **client_options) as dlq:
            while limit is None or done < limit:
                letters = await dlq.get_messages(timeout=timeout,
                                                 max_messages=None if limit is None
                                                 else limit - done)
                if not letters:
                    break
                records = [_record(x) for x in letters if not (x.fields or x.null_value)]
                for x in letters:
                    if x.fields or x.null_value:
                        log.warning("dead letter from %s[%s]@%s cannot be replayed as a "
                                    "record (%s); it stays in %s", x.source_topic, x.partition,
                                    x.offset, x.error, dlq_topic)
                if records:
                    await target.publish(records)
                await dlq.commit()
                done += len(letters)
                replayed += len(records)
    finally:
        await target.close()
    return replayed


def _record(letter: DeadLetter) -> Record:
    """The original record of a dead letter: bytes, key and headers as they were received."""
    headers = tuple((k, v or b"") for k, v in letter.headers) if letter.headers else None
    return Record(letter.source_topic, letter.original, letter.key, headers)
