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
