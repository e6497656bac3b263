"""Importing the library changes nothing outside it: loggers and metrics appear on first use."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import logging
import prometheus_client
import mlops_async, mlops_async.backends.kafka.aio, mlops_async.backends.redis
assert not logging.getLogger("aiokafka.conn").filters, "filter installed at import"
assert "redis_process_time_seconds" not in prometheus_client.REGISTRY._names_to_collectors
from mlops_async.backends.kafka.aio import KafkaBackend
from mlops_async.backends.redis import RedisBackend
KafkaBackend("127.0.0.1:1")
RedisBackend("redis://127.0.0.1:1/0")
assert logging.getLogger("aiokafka.conn").filters, "no filter once a backend exists"
assert "redis_process_time_seconds" in prometheus_client.REGISTRY._names_to_collectors
print("ok")
"""


def test_backends_touch_foreign_loggers_and_registries_only_when_used() -> None:
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_version_comes_from_the_installed_distribution() -> None:
    from importlib.metadata import version

    import mlops_async

    assert mlops_async.__version__ == version("mlops-async")
