"""The read window: how many records a consumer holds read and not yet acknowledged.

What a member of a group has read and not started is work the group's other
members cannot do. So a consumer holds about ``seconds`` of its caller's
work: a fast caller gets full fetches (``most`` records, and as many again
read ahead where the backend reads ahead), a slow one about one message (or
one batch) beyond what it has in hand, and a slow stage's members share its
work message by message.
"""

from __future__ import annotations

__all__ = ["ReadWindow"]

# Shorter spans than this are timer noise, not a pace (and never divide by zero).
_RESOLUTION = 1e-7


class ReadWindow:
    """The caller's pace (seconds per message) and what it allows a consumer to hold."""

    __slots__ = ("most", "pace", "seconds")

    def __init__(self, seconds: float, most: int) -> None:
        self.seconds = seconds
        self.most = most
        #: Seconds the caller takes per message; 0.0 until first measured.
        self.pace = 0.0

    def observe(self, elapsed: float, messages: int) -> None:
        """Fold in a span of ``elapsed`` seconds in which the caller went through
        ``messages`` (0: one message was in hand all along, so at least that slow).

        Slower takes effect at once, since work held too long is what the group
        waits for; faster by halves, so one quick message after slow ones does
        not open the window wide.
        """
        sample = max(elapsed, _RESOLUTION) / max(messages, 1)
        if sample >= self.pace or self.pace == 0.0:
            self.pace = sample
        else:
            self.pace = (self.pace + sample) / 2

    def room(self, in_hand: int) -> int:
        """Records the caller can start within the window beyond ``in_hand`` (0 unmeasured)."""
        if self.pace == 0.0:
            return 0
        # Capped well above anything fetched, so a tiny pace stays a small int.
        return max(0, int(min(self.seconds / self.pace, 4.0 * self.most)) - in_hand)

    def fetch(self, in_hand: int, least: int) -> tuple[int, int]:
        """(records to fetch now, records a backend may read ahead beyond those).

        ``least``: what the caller asked for, plus what it must hold beyond that.
        """
        return split(self.room(in_hand), least, self.most)


def split(room: int, least: int, most: int) -> tuple[int, int]:
    """``room`` records as one fetch of at least ``least`` and at most ``most``, and
    what is left of the room, up to as many again, for a backend's read-ahead."""
    want = max(1, min(most, max(least, room)))
    return want, max(0, min(want, room - want))
