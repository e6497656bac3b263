"""kafka+confluent:// options: librdkafka's names and the aiokafka-style ones, checked early.

No broker needed: options are checked when the backend (or the Producer,
Consumer, Admin that will use it) is constructed.
"""

from __future__ import annotations

import pytest

from mlops_async import Admin, ConfigurationError, Consumer, Producer
from mlops_async.backends import create_backend

URL = "kafka+confluent://h1:9092,h2:9092"


def test_dotted_and_aiokafka_style_names_both_work() -> None:
    be = create_backend(URL, session_timeout_ms=3000, **{"heartbeat.interval.ms": 300,
                                                          "linger.ms": 2}, acks=1)
    assert be.scheme == "kafka+confluent"
    names = type(be).option_names()
    assert names is not None
    assert {"session.timeout.ms", "session_timeout_ms", "group.instance.id",
            "group_instance_id", "partition.assignment.strategy"} <= names
    # Static membership and cooperative rebalancing are plain options.
    create_backend(URL, group_instance_id="worker-1",
                   partition_assignment_strategy="cooperative-sticky")
    create_backend(URL, **{"group.instance.id": "worker-1",
                           "partition.assignment.strategy": "cooperative-sticky"})


def test_unknown_options_fail_at_construction_naming_the_closest() -> None:
    with pytest.raises(ConfigurationError, match="session_timeout_ms"):
        create_backend(URL, sesion_timeout_ms=3000)
    with pytest.raises(ConfigurationError, match=r"session\.timeout\.ms"):
        create_backend(URL, **{"session.timeout.msec": 3000})
    # Producer, Consumer and Admin refuse them when constructed, before any connection.
    with pytest.raises(ConfigurationError, match="lingerms"):
        Producer(URL, topic="t", lingerms=5)
    with pytest.raises(ConfigurationError, match="heartbeat"):
        Consumer(URL, topic="t", group="g", heartbeat_intervall_ms=5)
    with pytest.raises(ConfigurationError, match="bogus"):
        Admin(URL, bogus=1)


def test_options_the_library_owns_are_refused_with_the_reason() -> None:
    for option in ("enable_auto_commit", "enable.auto.commit", "enable.auto.offset.store"):
        with pytest.raises(ConfigurationError, match=option.replace(".", r"\.")):
            create_backend(URL, **{option: True})
    with pytest.raises(ConfigurationError):
        create_backend(URL, **{"bootstrap.servers": "elsewhere:9092"})
    with pytest.raises(ConfigurationError):
        create_backend(URL, **{"group.id": "g"})


def test_sasl_plain_without_tls_is_refused_and_secrets_never_show() -> None:
    secret = "s3cr3t-passw0rd"
    with pytest.raises(ConfigurationError) as info:
        create_backend(URL, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                       sasl_plain_username="u", sasl_plain_password=secret)
    assert secret not in str(info.value)
    be = create_backend(URL, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                        sasl_plain_username="u", sasl_plain_password=secret,
                        allow_plaintext_sasl=True)
    assert secret not in repr(be)
    in_url = create_backend(f"kafka+confluent://u:{secret}@h:9092?sasl_mechanism=SCRAM-SHA-512")
    assert secret not in repr(in_url)
