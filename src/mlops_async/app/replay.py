"""Dead letters back to their source topics, after a fix: all, by error type, or by id."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from ..backends import Record, create_backend
from ..browse import read_dead_letters, require_topic
from ..consumer import Consumer
from ..deadletter import DeadLetter
from ..endpoint import resolve_url
from ..errors import ConfigurationError

__all__ = ["replay_dead_letters"]

log = logging.getLogger("mlops_async.app")


async def replay_dead_letters(
    url: str, dlq_topic: str, *, group: str = "mlops-dlq-replay", limit: int | None = None,
    timeout: float = 2.0, error_types: Collection[str] = (),
    skip_error_types: Collection[str] = (), ids: Collection[str] = (), **client_options: Any,
) -> int:
    """Send dead letters back to their source topics, byte for byte; returns how many.

    The replay ``group`` remembers which letters it went through, so each is
    replayed once. ``error_types`` replays only letters of those types (the
    error's class name: ``DecodeError``, ``TimeoutError``...), ``skip_error_types``
    all but those (``Reject``: refused for good); the letters a filter leaves out
    are passed over for good by this group (replay them by id, or with another
    ``group``). ``limit`` bounds how many letters one call goes through.

    ``ids`` (as ``mlops-async dlq list`` prints them) replays exactly those
    letters, read without the group, whatever it went through; an id that is not
    there raises :class:`ConfigurationError` before anything is sent.

    Each is acknowledged on the dead-letter queue only after its original was
    confirmed by the broker, so a crash mid-replay replays again, never loses.
    A letter whose record could not be read at all (raw fields of a foreign
    Redis entry) or had a null value cannot be sent back as a record: it is
    left where it is in the dead-letter topic and logged. An unknown queue
    raises :class:`ConfigurationError`.
    """
    if ids:
        return await _replay_ids(url, dlq_topic, set(ids), timeout, client_options)
    await require_topic(url, dlq_topic, client_options)
    wanted = set(error_types)
    skipped = set(skip_error_types)
    target = create_backend(await resolve_url(url), **client_options)
    await target.connect()
    done = replayed = passed = 0
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
                chosen = [x for x in letters if (not wanted or x.error_type in wanted)
                          and x.error_type not in skipped]
                passed += len(letters) - len(chosen)
                records = _records(chosen, dlq_topic)
                if records:
                    await target.publish(records)
                await dlq.commit()
                done += len(letters)
                replayed += len(records)
    finally:
        await target.close()
    if passed:
        log.info("dead-letter replay of %s: passed over %d letter(s) the filters left out",
                 dlq_topic, passed)
    return replayed


async def _replay_ids(url: str, dlq_topic: str, ids: set[str], timeout: float,
                      client_options: dict[str, Any]) -> int:
    found = {lid: x for lid, x in await read_dead_letters(url, dlq_topic, timeout=timeout,
                                                          **client_options) if lid in ids}
    missing = sorted(ids - found.keys())
    if missing:
        raise ConfigurationError(f"no dead letter {', '.join(missing)} in {dlq_topic} "
                                 "(`mlops-async dlq list` shows the ids)")
    records = _records(list(found.values()), dlq_topic)
    if records:
        target = create_backend(await resolve_url(url), **client_options)
        await target.connect()
        try:
            await target.publish(records)
        finally:
            await target.close()
    return len(records)


def _records(letters: list[DeadLetter], dlq_topic: str) -> list[Record]:
    for x in letters:
        if x.fields or x.null_value:
            log.warning("dead letter from %s[%s]@%s cannot be replayed as a record (%s); it "
                        "stays in %s", x.source_topic, x.partition, x.offset, x.error, dlq_topic)
    return [_record(x) for x in letters if not (x.fields or x.null_value)]


def _record(letter: DeadLetter) -> Record:
    """The original record of a dead letter: bytes, key and headers as they were received."""
    headers = tuple((k, v or b"") for k, v in letter.headers) if letter.headers else None
    return Record(letter.source_topic, letter.original, letter.key, headers)
