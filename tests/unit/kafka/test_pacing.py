"""Commit pacing: at most one paced commit an interval, on the caller's clock."""

from __future__ import annotations

import pytest

from mlops_async.backends.kafka.pacing import COMMIT_EVERY, CommitPacer


def test_the_first_commit_goes_at_once_and_the_next_waits_an_interval() -> None:
    pacer = CommitPacer()
    assert pacer.every == COMMIT_EVERY
    assert pacer.wait(100.0) <= 0
    pacer.sent(100.0)
    assert pacer.wait(100.0) == pytest.approx(COMMIT_EVERY)
    assert 0 < pacer.wait(100.0 + COMMIT_EVERY / 2) <= COMMIT_EVERY / 2
    assert pacer.wait(100.0 + 2 * COMMIT_EVERY) < 0


def test_each_commit_restarts_the_interval() -> None:
    pacer = CommitPacer(every=1.0)
    pacer.sent(5.0)
    pacer.sent(7.5)
    assert pacer.wait(8.0) == 0.5
