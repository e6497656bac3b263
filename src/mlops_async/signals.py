"""Outcome signals a handler raises to decide what happens to its input message.

``raise Reject("why")``: straight to the dead-letter queue, no retry.
``raise Retry("why", delay=...)``: try again (counts as an attempt).
``raise Ack()``: done, acknowledge, publish nothing.
Any other exception is retried up to the handler's ``retries``, unless it has
``retriable = False`` (our :class:`~mlops_async.errors.BusError` subclasses
say so), in which case it is dead-lettered at once.
"""

from __future__ import annotations

__all__ = ["Ack", "Reject", "Retry"]


class Ack(Exception):
    """Acknowledge the input now and publish nothing."""


class Reject(Exception):
    """Send the input to the dead-letter queue now, with this reason."""

    retriable = False


class Retry(Exception):
    """Process the input again after ``delay`` seconds (default: the backoff)."""

    def __init__(self, reason: str = "", delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
