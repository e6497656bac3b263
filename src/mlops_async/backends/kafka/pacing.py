"""How often a Kafka subscription commits: at most once an interval, acks merging meanwhile.

A commit per fetched batch costs a request and its answer every few
milliseconds on a busy stream; acknowledgements made within the interval go
with the next commit instead. Revocations and close commit at once.
"""

from __future__ import annotations

__all__ = ["COMMIT_EVERY", "CommitPacer"]

#: Seconds between two paced commits.
COMMIT_EVERY = 0.05


class CommitPacer:
    """When the next paced commit may go, on whatever clock the caller reads."""

    __slots__ = ("_next", "every")

    def __init__(self, every: float = COMMIT_EVERY) -> None:
        self.every = every
        self._next = float("-inf")

    def wait(self, now: float) -> float:
        """Seconds until a commit may go (0 or less: now)."""
        return self._next - now

    def sent(self, now: float) -> None:
        """A commit went at ``now``: the next waits an interval."""
        self._next = now + self.every
