"""Options of the ``kafka+confluent://`` backend: librdkafka's names, and aiokafka's.

Users pass librdkafka's dotted names (``**{"session.timeout.ms": 6000}``) or
the aiokafka-style names they already use with ``kafka://``
(``session_timeout_ms=6000``); both become one librdkafka configuration. A
name that is neither, or that the library owns (it would break delivery
guarantees), raises :class:`~mlops_async.errors.ConfigurationError` naming the
closest known ones. Each librdkafka property goes only to the clients it
applies to (producer, consumer, or both), so librdkafka never warns about a
consumer property given to a producer.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from ....errors import ConfigurationError
from ..url import URL_PARAMS

__all__ = [
    "LIBRARY_OPTIONS",
    "OWNED",
    "PROPERTIES",
    "Role",
    "option_names",
    "scoped",
    "to_librdkafka",
]

Role = Literal["producer", "consumer", "admin"]

# librdkafka 2.x configuration properties (its CONFIGURATION.md), without the
# deprecated ones and those set through dedicated C APIs; by where they apply.
_BOTH = """
acks allow.auto.create.topics api.version.request.timeout.ms bootstrap.servers
broker.address.family broker.address.ttl builtin.features client.dns.lookup client.id
client.rack connections.max.idle.ms debug enable.metrics.push enable.random.seed
enable.sasl.oauthbearer.unsecure.jwt enable.ssl.certificate.verification https.ca.location
https.ca.pem internal.termination.signal log.connection.close log.queue log.thread.name
log_level max.in.flight max.in.flight.requests.per.connection message.copy.max.bytes
message.max.bytes metadata.broker.list metadata.max.age.ms
metadata.recovery.rebootstrap.trigger.ms metadata.recovery.strategy plugin.library.paths
receive.message.max.bytes reconnect.backoff.max.ms reconnect.backoff.ms retry.backoff.max.ms
retry.backoff.ms sasl.kerberos.keytab sasl.kerberos.kinit.cmd
sasl.kerberos.min.time.before.relogin sasl.kerberos.principal sasl.kerberos.service.name
sasl.mechanism sasl.mechanisms sasl.oauthbearer.assertion.algorithm
sasl.oauthbearer.assertion.claim.aud sasl.oauthbearer.assertion.claim.exp.seconds
sasl.oauthbearer.assertion.claim.iss sasl.oauthbearer.assertion.claim.jti.include
sasl.oauthbearer.assertion.claim.nbf.seconds sasl.oauthbearer.assertion.claim.sub
sasl.oauthbearer.assertion.file sasl.oauthbearer.assertion.jwt.template.file
sasl.oauthbearer.assertion.private.key.file sasl.oauthbearer.assertion.private.key.passphrase
sasl.oauthbearer.assertion.private.key.pem sasl.oauthbearer.client.credentials.client.id
sasl.oauthbearer.client.credentials.client.secret sasl.oauthbearer.client.id
sasl.oauthbearer.client.secret sasl.oauthbearer.config sasl.oauthbearer.extensions
sasl.oauthbearer.grant.type sasl.oauthbearer.metadata.authentication.type
sasl.oauthbearer.method sasl.oauthbearer.scope sasl.oauthbearer.sub.claim.name
sasl.oauthbearer.token.endpoint.url sasl.password sasl.username security.protocol
socket.connection.setup.timeout.ms socket.keepalive.enable socket.max.fails
socket.nagle.disable socket.receive.buffer.bytes socket.send.buffer.bytes socket.timeout.ms
ssl.ca.certificate.stores ssl.ca.location ssl.ca.pem ssl.certificate.location
ssl.certificate.pem ssl.cipher.suites ssl.crl.location ssl.curves.list
ssl.endpoint.identification.algorithm ssl.engine.id ssl.key.location ssl.key.password
ssl.key.pem ssl.keystore.location ssl.keystore.password ssl.providers ssl.sigalgs.list
statistics.interval.ms topic.blacklist topic.metadata.propagation.max.ms
topic.metadata.refresh.fast.interval.ms topic.metadata.refresh.interval.ms
topic.metadata.refresh.sparse
"""
_CONSUMER = """
auto.commit.interval.ms auto.offset.reset check.crcs consume.callback.max.messages
coordinator.query.interval.ms enable.auto.commit enable.auto.offset.store
enable.partition.eof fetch.error.backoff.ms fetch.max.bytes fetch.message.max.bytes
fetch.min.bytes fetch.queue.backoff.ms fetch.wait.max.ms group.id group.instance.id
group.protocol group.protocol.type group.remote.assignor heartbeat.interval.ms
isolation.level max.partition.fetch.bytes max.poll.interval.ms
partition.assignment.strategy queued.max.messages.kbytes queued.min.messages
session.timeout.ms
"""
_PRODUCER = """
batch.num.messages batch.size compression.codec compression.level compression.type
delivery.report.only.error delivery.timeout.ms enable.gapless.guarantee enable.idempotence
linger.ms message.send.max.retries message.timeout.ms partitioner
queue.buffering.backpressure.threshold queue.buffering.max.kbytes
queue.buffering.max.messages queue.buffering.max.ms request.required.acks
request.timeout.ms retries sticky.partitioning.linger.ms transaction.timeout.ms
transactional.id
"""
#: librdkafka property -> where it applies: "*" every client, "C" consumers, "P" producers.
PROPERTIES: dict[str, str] = {
    **dict.fromkeys(_BOTH.split(), "*"),
    **dict.fromkeys(_CONSUMER.split(), "C"),
    **dict.fromkeys(_PRODUCER.split(), "P"),
}

# Callables confluent-kafka takes in the configuration (they run on the
# client's own thread, not on the event loop).
_CALLBACKS = {"stats_cb": "*", "throttle_cb": "*", "oauth_cb": "*"}

# aiokafka names whose librdkafka name is not simply dots for underscores.
_RENAMED = {
    "max_batch_size": "batch.size",
    "max_request_size": "message.max.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "receive_buffer_bytes": "socket.receive.buffer.bytes",
    "send_buffer_bytes": "socket.send.buffer.bytes",
}

#: Options the library owns: overriding them would break delivery guarantees.
OWNED = {
    "bootstrap.servers": "it comes from the URL (kafka+confluent://host1:9092,host2:9092)",
    "metadata.broker.list": "it comes from the URL (kafka+confluent://host1:9092,host2:9092)",
    "group.id": "pass group= to the Consumer",
    "enable.auto.commit": "offsets are committed only after processing (at-least-once)",
    "enable.auto.offset.store": "offsets are stored only after processing (at-least-once)",
    "auto.commit.interval.ms": "offsets are committed only after processing (at-least-once)",
    "auto.offset.reset": "pass auto_offset_reset= to the Consumer",
    "transactional.id": "transactions are not part of the Producer API",
    "delivery.report.only.error": "the Producer confirms every record",
    "enable.partition.eof": "the Consumer does not report partition ends",
    "log.queue": "librdkafka logs go to the 'mlops_async.confluent.librdkafka' logger",
    "rebalance_timeout_ms": "librdkafka sends max.poll.interval.ms (max_poll_interval_ms) "
    "as the rebalance timeout",
    "key_serializer": "the Producer serialises messages itself",
    "value_serializer": "the Producer serialises messages itself",
    "key_deserializer": "the Consumer decodes messages itself",
    "value_deserializer": "the Consumer decodes messages itself",
    "on_delivery": "the backend confirms deliveries itself",
    "on_commit": "the backend commits offsets itself",
    "error_cb": "the backend reports broker errors itself",
    "logger": "librdkafka logs go to the 'mlops_async.confluent.librdkafka' logger",
}
# aiokafka-style spellings of owned options map onto the dotted ones above.
_OWNED_ALIASES = {
    "bootstrap_servers": "bootstrap.servers",
    "group_id": "group.id",
    "enable_auto_commit": "enable.auto.commit",
    "auto_commit_interval_ms": "auto.commit.interval.ms",
    "auto_offset_reset": "auto.offset.reset",
    "transactional_id": "transactional.id",
}

#: The library's own options (not librdkafka's).
LIBRARY_OPTIONS = frozenset({
    "publish_timeout",  # seconds a batch may wait for the broker's acknowledgement
    "connect_timeout",  # seconds connect() waits for the broker to answer
    "allow_plaintext_sasl",  # accept SASL PLAIN without TLS (a trusted network)
    "max_poll_records",  # at most this many records per fetch (aiokafka's name)
    "api_version",  # aiokafka's; librdkafka always negotiates versions ("auto")
    # "default" or "round_robin" for keyless records; keys always go by murmur2 (the
    # Java client's choice, as on kafka://), so librdkafka's own partitioner is ours.
    "partitioner",
})


def _dotted(name: str) -> str | None:
    """The librdkafka property ``name`` stands for, or None."""
    if name in PROPERTIES or name in _CALLBACKS:
        return name
    if name in _RENAMED:
        return _RENAMED[name]
    dotted = name.replace("_", ".")
    return dotted if dotted in PROPERTIES else None


def option_names() -> frozenset[str]:
    """Every name the backend takes (owned ones too: they are refused with a reason)."""
    aliases = {k.replace(".", "_") for k in PROPERTIES if "." in k}
    return (frozenset(PROPERTIES) | frozenset(_CALLBACKS) | frozenset(_RENAMED)
            | frozenset(aliases) | frozenset(OWNED) | frozenset(_OWNED_ALIASES)
            | LIBRARY_OPTIONS | frozenset(URL_PARAMS))


def _value(name: str, value: Any) -> Any:
    """aiokafka-style values as librdkafka takes them."""
    if name == "compression.type" and value is None:
        return "none"
    if name == "partition.assignment.strategy" and isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def to_librdkafka(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``options`` into (the library's own, librdkafka's configuration).

    Raises :class:`ConfigurationError` for an owned option (saying why) and
    for an unknown one (naming the closest known names), and when one
    property is given twice under two spellings.
    """
    library: dict[str, Any] = {}
    conf: dict[str, Any] = {}
    unknown: list[str] = []
    for name, value in options.items():
        owned = OWNED.get(name) or OWNED.get(_OWNED_ALIASES.get(name, ""))
        dotted = _dotted(name)
        if owned is None and dotted in OWNED:
            owned = OWNED[str(dotted)]
        if owned is not None:
            raise ConfigurationError(f"{name} cannot be set: {owned}")
        if name in LIBRARY_OPTIONS:
            library[name] = value
            continue
        if dotted is None:
            unknown.append(name)
            continue
        if dotted in conf:
            raise ConfigurationError(f"{dotted} is given twice (as {name} and another spelling)")
        conf[dotted] = _value(dotted, value)
    if unknown:
        known = sorted(option_names())
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=3, cutoff=0.6)
            hints.append(f"{k} (did you mean {' or '.join(close)}?)" if close else k)
        raise ConfigurationError(
            f"unknown option(s) for kafka+confluent://: {', '.join(hints)} "
            "(neither librdkafka properties nor mlops_async options)"
        )
    api = library.pop("api_version", "auto")
    if str(api) != "auto":
        raise ConfigurationError(
            f"api_version={api!r}: librdkafka negotiates protocol versions itself; "
            "leave it out (or pass 'auto')"
        )
    return library, conf


def scoped(conf: Mapping[str, Any], role: Role) -> dict[str, Any]:
    """The part of ``conf`` that applies to a ``role`` client."""
    wanted = {"producer": "*P", "consumer": "*C", "admin": "*"}[role]
    return {k: v for k, v in conf.items() if (PROPERTIES.get(k) or _CALLBACKS[k]) in wanted}
