"""Credentials in URLs: used or refused clearly, and redacted in every repr, error and log line.

Kafka's SASL options are checked here; refused logins against a broker that
requires SASL are in tests/kafka/test_auth.py. A successful SASL login cannot
be run in this suite: Tansu only lets an authenticated client create users.
"""

from __future__ import annotations

import logging

import pytest

from mlops_async import BusUnavailable, ConfigurationError, Producer
from mlops_async.backends import create_backend
from mlops_async.backends.kafka.aio import KafkaBackend
from mlops_async.endpoint import redact, split_url

from ...brokers import free_port
from ...conftest import make_msg

SECRET = "pa:ss@w0rd"
QUOTED = "pa%3Ass%40w0rd"


def test_split_url_decodes_userinfo_and_keeps_it_out_of_the_rest() -> None:
    base, creds, params = split_url(f"kafka://alice:{QUOTED}@h1:9092,h2:9092?sasl_mechanism=X")
    assert base == "kafka://h1:9092,h2:9092"
    assert creds is not None and (creds.user, creds.password) == ("alice", SECRET)
    assert params == {"sasl_mechanism": "X"}
    assert SECRET not in repr(creds)
    assert redact("at kafka://alice:pw@h:1 and redis://:pw@h/0") == (
        "at kafka://alice:***@h:1 and redis://:***@h/0")


def test_kafka_userinfo_becomes_sasl_over_tls_never_part_of_the_host() -> None:
    be = create_backend(f"kafka://alice:{QUOTED}@127.0.0.1:9092")
    assert isinstance(be, KafkaBackend)
    assert be.bootstrap_servers == "127.0.0.1:9092"
    kw = be._kwargs(frozenset({"sasl_plain_username", "sasl_plain_password", "sasl_mechanism",
                               "security_protocol", "bootstrap_servers"}), {})
    assert kw["sasl_plain_username"] == "alice" and kw["sasl_plain_password"] == SECRET
    assert kw["sasl_mechanism"] == "PLAIN" and kw["security_protocol"] == "SASL_SSL"
    assert SECRET not in repr(be) and QUOTED not in repr(be)
    scram = create_backend(f"kafka://alice:{QUOTED}@h:9092?sasl_mechanism=SCRAM-SHA-256")
    assert scram._options["sasl_mechanism"] == "SCRAM-SHA-256"  # type: ignore[attr-defined]


def test_kafka_url_mistakes_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="needs a password"):
        create_backend("kafka://alice@h:9092")
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        create_backend("kafka://h:9092?acks=all")
    with pytest.raises(ConfigurationError, match="give them once"):
        create_backend("kafka://a:b@h:9092", sasl_plain_username="a", sasl_plain_password="b")
    # PLAIN over a plaintext connection is refused unless allowed explicitly.
    with pytest.raises(ConfigurationError, match="clear text") as info:
        create_backend(f"kafka://alice:{QUOTED}@h:9092?security_protocol=SASL_PLAINTEXT")
    assert SECRET not in str(info.value)
    create_backend(f"kafka://alice:{QUOTED}@h:9092", allow_plaintext_sasl=True)


@pytest.mark.parametrize("scheme", ["kafka", "redis", "postgresql"])
async def test_a_password_never_shows_in_reprs_errors_or_logs(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens: every connection attempt fails
    extra = {"allow_plaintext_sasl": True, "connect_timeout": 2} if scheme == "kafka" else {}
    url = f"{scheme}://alice:{QUOTED}@127.0.0.1:{port}/db"
    p: Producer = Producer(url, topic="t", strict=True, **extra)
    with pytest.raises(BusUnavailable) as info:
        await p.start()
    texts = [str(info.value), repr(info.value), repr(p.backend), caplog.text]
    cause = info.value.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    await p.close()
    lenient: Producer = Producer(url, topic="t", flush_timeout=0.2, close_timeout=0.2, **extra)
    await lenient.send(make_msg(1), flush=True)
    await lenient.close()
    texts.append(caplog.text)
    for text in texts:
        assert SECRET not in text and QUOTED not in text, text


def test_an_unescaped_slash_or_at_in_a_password_never_reaches_a_host() -> None:
    for raw in ("p/w", "p@w", "p/w@x"):
        u = f"kafka://alice:{raw}@h:9092"
        base, creds, _ = split_url(u)
        assert base == "kafka://h:9092"
        assert creds is not None and creds.password == raw
        be = create_backend(u, allow_plaintext_sasl=True)
        assert isinstance(be, KafkaBackend) and be.bootstrap_servers == "h:9092"
        assert raw not in repr(be) and raw not in redact(u)


def test_password_parameters_are_redacted_too() -> None:
    url = f"postgresql://u@h/db?sslmode=disable&password={QUOTED}"
    assert redact(url) == "postgresql://u@h/db?sslmode=disable&password=***"
    be = create_backend(url)
    assert QUOTED not in repr(be) and SECRET not in repr(be)


def test_a_redis_user_needs_a_password() -> None:
    with pytest.raises(ConfigurationError, match="needs a password"):
        create_backend("redis://alice@h:6379/0")
    create_backend("redis://alice@h:6379/0", password="pw")  # given as an option instead
    create_backend(f"redis://:{QUOTED}@h:6379/0")  # the default user
