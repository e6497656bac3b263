"""Kafka credentials against a real broker that requires SASL (Tansu ``--authentication``).

Tansu keeps its users in the broker's own storage and only lets an
authenticated client create one, so with its in-memory storage no user can
exist: every login is refused. That is what this file checks, for PLAIN (a
mechanism Tansu does not offer: it closes the connection) and SCRAM (it
refuses the exchange). aiokafka reports both as "Unable to bootstrap", an
outage; the backend must tell them apart. A successful SASL login is checked
at the option level in tests/unit/clients/test_credentials.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from mlops_async import AuthenticationError, BusUnavailable, Consumer, Producer, PublishError

from ..brokers import Server, tansu_server
from ..conftest import make_msg

pytestmark = pytest.mark.kafka
SECRET = "s3cret-Pa55"
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[Server]:
    server = tansu_server()
    server.argv.append("--authentication")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url(server: Server, mechanism: str) -> str:
    return f"kafka://alice:{SECRET}@127.0.0.1:{server.port}?sasl_mechanism={mechanism}"


def _texts(exc: BaseException) -> list[str]:
    out: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        out += [str(cause), repr(cause)]
        cause = cause.__cause__
    return out


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_refused_credentials_are_an_authentication_error_in_strict_mode(
    sasl_broker: Server, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    u = url(sasl_broker, mechanism)
    producer: Producer = Producer(u, topic="auth", strict=True, allow_plaintext_sasl=True)
    with pytest.raises(AuthenticationError) as info:
        await producer.start()
    assert not info.value.retriable
    assert not isinstance(info.value, BusUnavailable)
    assert f"127.0.0.1:{sasl_broker.port}" in str(info.value)  # names the broker
    texts = [*_texts(info.value), repr(producer.backend)]
    await producer.close()
    consumer: Consumer = Consumer(u, topic="auth", group="g", strict=True,
                                  allow_plaintext_sasl=True)
    with pytest.raises(AuthenticationError) as info:
        await consumer.start()
    texts += [*_texts(info.value), repr(consumer.backend), caplog.text]
    await consumer.close()
    for text in texts:
        assert SECRET not in text, text


async def test_lenient_mode_logs_once_and_does_not_retry_forever(
    sasl_broker: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    u = url(sasl_broker, "SCRAM-SHA-256")
    async with asyncio.timeout(60):  # a retry loop would hang here: fail instead
        producer: Producer = Producer(u, topic="auth", flush_timeout=30,
                                      allow_plaintext_sasl=True)
        await producer.start()  # lenient: the pipeline is not crashed at start
        for i in range(3):
            await producer.send(make_msg(i))
        with pytest.raises(PublishError) as refused:
            await producer.flush()
        assert isinstance(refused.value.__cause__, AuthenticationError)
        assert not producer.stats()["outage"]
        await producer.close()
        consumer: Consumer = Consumer(u, topic="auth", group="g", allow_plaintext_sasl=True)
        with pytest.raises(AuthenticationError):
            async for _ in consumer:
                pass
        await consumer.close()
    ours = [r for r in caplog.records
            if r.name.startswith("mlops_async.producer") and r.levelno >= logging.ERROR]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert f"127.0.0.1:{sasl_broker.port}" in ours[0].getMessage()
    assert SECRET not in caplog.text
