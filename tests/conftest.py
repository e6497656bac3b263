from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from mlops_async import MessageBuilder, MessageType, MLOpsMessage

# Tests never probe the network for a default broker.
os.environ.setdefault("MLOPS_BUS_PROBE", "0")


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A name no other test uses: topics and groups on shared brokers."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


def make_msg(i: int = 0, **args: object) -> MLOpsMessage:
    return (
        MessageBuilder()
        .with_msg_type(MessageType.DATA)
        .with_creator_type("ETL")
        .with_creator("etl-1")
        .with_user_msg(f"record {i}")
        .with_next_task("TRAIN")
        .with_argument("i", i)
        .with_additional_arguments({"i": i, **args})
        .build()
    )


# The brokers come from the package's pytest plugin (mlops_async.testing.plugin), which
# users get too: kafka_broker and redis_server start one each per session, on free ports.


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: str) -> str:
    """``host:port`` of a Kafka-protocol broker for the session (KAFKA_BOOTSTRAP, or Tansu)."""
    return kafka_broker.removeprefix("kafka://")


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> str:
    """URL of a Redis server for the whole session: ours, unless REDIS_URL is set."""
    return redis_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL for the session: POSTGRES_URL, else our own server, else 127.0.0.1:5432."""
    external = os.environ.get("POSTGRES_URL")
    if external:
        yield external
        return
    import socket

    from .brokers import postgres_server

    server = None
    try:
        server = postgres_server()
        if server is not None:
            server.start()
    except Exception as exc:  # fall back to a local server below, or fail loudly
        server = None
        reason = f"starting our own failed: {exc}"
    else:
        reason = "no PostgreSQL binaries (apt-get install postgresql)"
    if server is not None:
        try:
            yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        finally:
            server.stop()
        return
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.fail(f"no PostgreSQL for the tests: {reason}; set POSTGRES_URL")
    yield "postgresql://postgres@127.0.0.1:5432/postgres"
