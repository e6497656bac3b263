"""The letter of an oversize record is read back as a DeadLetter on Redis too."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..unit.consumer.test_dead_letter_reader import oversize_letter

pytestmark = pytest.mark.redis


async def test_the_letter_of_an_oversize_redis_entry_is_read_not_forwarded(
        redis_url: str, unique: Callable[[str], str]) -> None:
    letters, forwarded = await oversize_letter(redis_url, unique("dlq-size"), 1_200_000)
    assert forwarded == 0
    [letter] = letters
    assert letter.error_type == "MessageTooLarge"
    assert len(letter.original) == 1_200_001
