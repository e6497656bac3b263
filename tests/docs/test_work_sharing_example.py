"""docs/work-sharing.md's example: two members of a group each handle their share."""

from __future__ import annotations

import uuid

from ._load import load


async def test_two_members_share_eight_slow_jobs() -> None:
    counts = await load("work_sharing/two_members.py").main(
        f"memory://work-sharing-{uuid.uuid4().hex[:8]}")
    assert sum(counts.values()) == 8
    assert all(abs(c - 4) <= 1 for c in counts.values()), counts
