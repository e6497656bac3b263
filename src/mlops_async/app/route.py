"""What a handler declares (input, outputs, dead letters, retries); the engine's errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._client import Backoff
from ..consumer import Consumer
from ..errors import BusError
from ..window import ReadWindow

__all__ = ["AppFailed", "Handler", "OutputError", "Route"]

Handler = Callable[[Any], Any]


class OutputError(BusError):
    """A handler returned something it may not publish (undeclared queue, wrong schema)."""


class AppFailed(BusError):
    """The app stopped because one of its parts could not go on (see ``__cause__``)."""


@dataclass
class Route:
    """One handler: where it reads, where it may write, how it retries; and its live state."""

    name: str
    fn: Handler
    is_async: bool
    input: str
    outputs: tuple[str, ...]
    dead_letter: str
    retries: int
    backoff: Backoff
    #: Set for a batch handler: it is called with lists of up to this many inputs.
    batch_size: int | None = None
    batch_wait: float = 0.02
    consumer: Consumer[Any] | None = None
    pump: asyncio.Task[None] | None = None
    last_error: str | None = None
    #: Inputs handed to workers and not finished; the pump reads only what the
    #: workers can start within the consumer's read window (``window``: their pace).
    held: int = 0
    window: ReadWindow | None = None
    room_freed: asyncio.Future[None] | None = None
