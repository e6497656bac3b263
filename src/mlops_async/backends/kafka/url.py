"""Kafka URLs and SASL, as both Kafka backends read them.

``kafka://[user:password@]host:9092[,host2:9092][?sasl_mechanism=...&security_protocol=...]``
(``kafka+confluent://`` alike). Credentials in the URL mean SASL (``PLAIN``
unless ``sasl_mechanism`` says ``SCRAM-SHA-256``/``SCRAM-SHA-512``) over TLS
(``SASL_SSL``), or over plain TCP with ``allow_plaintext_sasl=True``. Errors
never show the password: URLs in them are redacted.
"""

from __future__ import annotations

from typing import Any

from ...endpoint import redact, split_url
from ...errors import ConfigurationError

__all__ = ["URL_PARAMS", "check_plaintext_sasl", "parse_url"]

#: The query parameters a Kafka URL may carry (they become options of the same name).
URL_PARAMS = ("sasl_mechanism", "security_protocol")
# Options that carry credentials, in either backend's spelling: given with a URL
# that has credentials too, which one is meant is unclear.
_CREDENTIAL_OPTIONS = frozenset({"sasl_plain_username", "sasl_plain_password",
                                 "sasl.username", "sasl.password"})


def parse_url(url: str, options: dict[str, Any], *, user: str, password: str) -> str:
    """The bootstrap servers of ``url``; its parameters and credentials go into ``options``.

    ``user`` and ``password`` name the options the backend takes SASL
    credentials as. Raises :class:`ConfigurationError` for a URL without a
    broker, an unknown parameter, a user without a password, or credentials
    given both in the URL and as options.
    """
    scheme = url.partition("://")[0]
    base, creds, params = split_url(url)
    servers = base.split("://", 1)[1].split("/", 1)[0]
    if not servers:
        raise ConfigurationError(f"no broker address in {redact(url)!r}")
    for key, value in params.items():
        if key not in URL_PARAMS:
            raise ConfigurationError(
                f"unknown parameter {key!r} in a Kafka URL (known: {', '.join(URL_PARAMS)})")
        options.setdefault(key, value)
    if creds is None:
        return servers
    given = _CREDENTIAL_OPTIONS & set(options)
    if given:
        raise ConfigurationError(
            f"credentials are both in the URL and in {', '.join(sorted(given))}: give them once")
    if creds.password is None:
        raise ConfigurationError(
            f"a Kafka URL with a user needs a password: {scheme}://user:password@host:9092")
    options[user] = creds.user
    options[password] = creds.password
    if "sasl.mechanism" not in options:  # librdkafka's spelling counts as given
        options.setdefault("sasl_mechanism", "PLAIN")
    if "security.protocol" not in options:
        options.setdefault(
            "security_protocol",
            "SASL_PLAINTEXT" if options.get("allow_plaintext_sasl") else "SASL_SSL")
    return servers


def check_plaintext_sasl(mechanism: str, protocol: str, allowed: bool) -> None:
    """Refuse SASL PLAIN without TLS (the password would cross the network in clear
    text) unless ``allow_plaintext_sasl`` said the network is trusted."""
    if mechanism.upper() == "PLAIN" and protocol.upper() != "SASL_SSL" and not allowed:
        raise ConfigurationError(
            "SASL PLAIN without TLS would send the password in clear text; use "
            "security_protocol='SASL_SSL' (with ssl_cafile=... for a private CA) or pass "
            "allow_plaintext_sasl=True if the network is trusted")
