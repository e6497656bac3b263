"""Real brokers for the test suite, started on free loopback ports.

The code that starts them lives in :mod:`mlops_async.testing.brokers` (users'
tests get it through the pytest plugin); this module turns "cannot be had"
into a loud test failure, never a silent skip. ``KAFKA_BOOTSTRAP`` /
``REDIS_URL`` / ``POSTGRES_URL`` name external brokers instead (see conftest).
"""

from __future__ import annotations

import pytest

from mlops_async.testing import brokers as _brokers
from mlops_async.testing.brokers import (
    BrokerUnavailable,
    Server,
    free_port,
    postgres_server,
    wait_for_port,
)
from mlops_async.testing.brokers import pg_bindir as _pg_bindir

__all__ = [
    "Server",
    "_pg_bindir",
    "free_port",
    "postgres_server",
    "redis_server",
    "tansu_server",
    "wait_for_port",
]


def tansu_server() -> Server:
    try:
        return _brokers.tansu_server()
    except BrokerUnavailable as exc:
        pytest.fail(str(exc))


def redis_server(appendonly: bool = False) -> Server:
    try:
        return _brokers.redis_server(appendonly)
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}; ./scripts/test installs it")
