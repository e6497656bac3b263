"""Testing kit: run an app against a private bus in a test, and real brokers for the rest.

- :class:`TestApp` runs an :class:`~mlops_async.App` or a
  :class:`~mlops_async.Pipeline` on a private in-memory bus (or a real broker's
  URL) and lets the test publish, read outputs and dead letters, and drain.
- :mod:`mlops_async.testing.plugin` is a pytest plugin (installed with the
  package) with the fixtures ``memory_bus``, ``redis_server`` and ``kafka_broker``.
- :mod:`mlops_async.testing.brokers` starts Tansu and ``redis-server`` on free ports;
  :mod:`mlops_async.testing.observe` records what the app under test does.
"""

from __future__ import annotations

from .app import Call, TestApp
from .brokers import BrokerUnavailable

__all__ = ["BrokerUnavailable", "Call", "TestApp"]
