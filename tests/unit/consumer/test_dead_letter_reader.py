"""A dead-letter reader reads every letter, also one of a record refused as oversize."""

from __future__ import annotations

import uuid

from mlops_async import Consumer, DeadLetter, Producer
from mlops_async.backends import Record
from mlops_async.codec import DEFAULT_MAX_SIZE


async def oversize_letter(url: str, topic: str, size: int) -> tuple[list[DeadLetter], int]:
    """Publish an oversize record, let a consumer dead-letter it, read the letter back."""
    async with Producer(url, topic=topic) as p:
        assert p.backend is not None
        await p.backend.publish([Record(topic, b"\x01" + b"\xc0" * size)])
    async with Consumer(url, topic=topic, group="workers", auto_offset_reset="earliest") as c:
        assert await c.get_messages(timeout=1) == []
        assert c.dead_lettered == 1
    letters: list[DeadLetter] = []
    async with Consumer(url, topic=f"{topic}.dlq", group="ops", schema=DeadLetter,
                        auto_offset_reset="earliest") as dlq:
        for _ in range(20):
            letters += await dlq.get_messages(timeout=0.5)
            if letters:
                break
        forwarded = dlq.dead_lettered
    return letters, forwarded


async def test_the_letter_of_an_oversize_record_is_read_not_forwarded() -> None:
    url = f"memory://dlq-size-{uuid.uuid4().hex[:8]}"
    letters, forwarded = await oversize_letter(url, "events", DEFAULT_MAX_SIZE + 10)
    assert forwarded == 0
    [letter] = letters
    assert letter.error_type == "MessageTooLarge"
    assert len(letter.original) == DEFAULT_MAX_SIZE + 11  # the whole record, marker included


async def test_an_explicit_limit_still_bounds_a_dead_letter_reader() -> None:
    url = f"memory://dlq-size-{uuid.uuid4().hex[:8]}"
    async with Producer(url, topic="x.dlq") as p:
        assert p.backend is not None
        await p.backend.publish([Record("x.dlq", b"\x01" + b"\xc0" * 5000)])
    async with Consumer(url, topic="x.dlq", group="ops", schema=DeadLetter,
                        max_message_size=1000, auto_offset_reset="earliest") as dlq:
        assert await dlq.get_messages(timeout=0.5) == []
        assert dlq.dead_lettered == 1


def test_other_schemas_keep_the_default_limit() -> None:
    assert Consumer("memory://", topic="t")._codec.max_size == DEFAULT_MAX_SIZE
