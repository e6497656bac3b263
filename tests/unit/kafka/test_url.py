"""Kafka URLs and SASL, as both Kafka backends read them (each backend's own use of
them is in tests/unit/test_credentials.py and tests/confluent/test_options.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_async import ConfigurationError
from mlops_async.backends.kafka.url import URL_PARAMS, check_plaintext_sasl, parse_url

SECRET = "pa:ss@w0rd"
QUOTED = "pa%3Ass%40w0rd"


def parsed(url: str, **options: Any) -> tuple[str, dict[str, Any]]:
    servers = parse_url(url, options, user="u_opt", password="p_opt")
    return servers, options


def test_servers_and_parameters_become_options() -> None:
    assert parsed("kafka://h1:9092,h2:9092?security_protocol=SSL") == (
        "h1:9092,h2:9092", {"security_protocol": "SSL"})
    assert parsed("kafka+confluent://h:9092", sasl_mechanism="X") == (
        "h:9092", {"sasl_mechanism": "X"}), "an option given wins over nothing in the URL"
    assert set(URL_PARAMS) == {"sasl_mechanism", "security_protocol"}


def test_credentials_mean_sasl_over_tls_under_the_backends_option_names() -> None:
    servers, options = parsed(f"kafka://alice:{QUOTED}@h:9092")
    assert servers == "h:9092"
    assert options == {"u_opt": "alice", "p_opt": SECRET, "sasl_mechanism": "PLAIN",
                       "security_protocol": "SASL_SSL"}
    _, plain = parsed("kafka://a:b@h:9092", allow_plaintext_sasl=True)
    assert plain["security_protocol"] == "SASL_PLAINTEXT"
    _, scram = parsed("kafka://a:b@h:9092?sasl_mechanism=SCRAM-SHA-512")
    assert scram["sasl_mechanism"] == "SCRAM-SHA-512"
    _, dotted = parsed("kafka://a:b@h:9092", **{"sasl.mechanism": "SCRAM-SHA-256",
                                                "security.protocol": "SASL_SSL"})
    assert "sasl_mechanism" not in dotted and "security_protocol" not in dotted, (
        "librdkafka's spelling counts as given")


@pytest.mark.parametrize(("url", "options", "error"), [
    (f"kafka://alice:{QUOTED}@", {}, "no broker address"),
    ("kafka://h:9092?acks=all", {}, "unknown parameter 'acks'"),
    ("kafka://alice@h:9092", {}, "needs a password"),
    (f"kafka://alice:{QUOTED}@h:9092", {"sasl_plain_password": "x"}, "give them once"),
    (f"kafka://alice:{QUOTED}@h:9092", {"sasl.username": "x"}, "give them once"),
])
def test_url_mistakes_are_configuration_errors_that_never_show_the_password(
    url: str, options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ConfigurationError, match=error) as info:
        parsed(url, **options)
    assert SECRET not in str(info.value) and QUOTED not in str(info.value)


def test_sasl_plain_needs_tls_unless_the_network_is_trusted() -> None:
    with pytest.raises(ConfigurationError, match="clear text"):
        check_plaintext_sasl("plain", "SASL_PLAINTEXT", allowed=False)
    check_plaintext_sasl("PLAIN", "SASL_PLAINTEXT", allowed=True)
    check_plaintext_sasl("PLAIN", "sasl_ssl", allowed=False)
    check_plaintext_sasl("SCRAM-SHA-256", "SASL_PLAINTEXT", allowed=False)
