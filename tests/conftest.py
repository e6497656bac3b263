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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from .brokers import tansu_server

    server = tansu_server()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"cannot start the Kafka test broker: {exc}")
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server for the whole session: ours, unless REDIS_URL is set."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    from .brokers import redis_server

    server = redis_server()
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"cannot start redis-server for the tests: {exc}")
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


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
