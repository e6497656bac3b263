"""What Producer, Consumer and Admin share: finding the broker, opening it, outages."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from .backends import Backend, check_options, create_backend
from .endpoint import ENV_VAR, resolve_url, seed_url

log = logging.getLogger("mlops_async")

__all__ = ["Backoff", "Outage", "open_backend", "topic_names", "where_to"]


def topic_names(topic: str | Sequence[str] | None) -> tuple[str, ...]:
    """``topic=`` as clients take it (one name, several, or none) as a tuple."""
    if topic is None:
        return ()
    if isinstance(topic, str):
        return (topic,)
    return tuple(topic)


def where_to(
    url: str | None, orchestrator: str | None, endpoint: str | None, options: dict[str, Any]
) -> tuple[str | None, str | None, str | None, dict[str, Any]]:
    """Normalise how a client was told where the broker is, and check its options now.

    Accepts the seed's positional form ``Consumer("kafka:9092", "kafka")``
    (endpoint, then orchestrator). When the broker is already known (URL, seed
    arguments or ``MLOPS_BUS_URL``), options the backend does not take raise
    :class:`ConfigurationError` here, at construction; otherwise when it starts.
    """
    if url is not None and "://" not in url and orchestrator is not None and endpoint is None:
        url, endpoint = None, url
    target = url or (seed_url(orchestrator, endpoint) if orchestrator else None)
    target = target or os.environ.get(ENV_VAR)
    if target:
        options = check_options(target, options)
    return url, orchestrator, endpoint, options


async def open_backend(
    url: str | None,
    orchestrator: str | None,
    orchestrator_endpoint: str | None,
    client_options: dict[str, Any],
) -> Backend:
    """Create (but do not connect) the backend for the resolved URL."""
    resolved = await resolve_url(url, orchestrator, orchestrator_endpoint)
    return create_backend(resolved, **client_options)


class Backoff:
    """Exponential backoff with full jitter, reset on success."""

    __slots__ = ("_attempt", "base", "cap")

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    def next_delay(self) -> float:
        delay = self.delay_for(self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return delay

    def delay_for(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` (0 for the first), with jitter.

        Jitter spreads the retries of many workers that failed at once.
        """
        delay = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0


class Outage:
    """Logs one warning when the broker goes away and one line when it is back."""

    __slots__ = ("_what", "down_since", "failures")

    def __init__(self, what: str) -> None:
        self._what = what
        self.down_since: float | None = None
        self.failures = 0

    @property
    def active(self) -> bool:
        return self.down_since is not None

    def down(self, exc: BaseException, now: float, detail: str = "") -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = now
            extra = f"; {detail}" if detail else ""
            log.warning("%s: broker unavailable (%s); retrying%s", self._what, exc, extra)

    def up(self, now: float, detail: str = "") -> None:
        if self.down_since is not None:
            extra = f"; {detail}" if detail else ""
            log.warning(
                "%s: broker reachable again after %.1fs%s", self._what, now - self.down_since, extra
            )
            self.down_since = None


class AsyncResource:
    """``async with`` support: enter starts, exit closes."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
