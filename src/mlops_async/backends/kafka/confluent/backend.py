"""Kafka through librdkafka (confluent-kafka): ``kafka+confluent://host:9092[,host2:9092]``.

The second Kafka backend (``kafka://`` stays aiokafka), for what librdkafka
has and aiokafka lacks: cooperative incremental rebalancing
(``partition_assignment_strategy="cooperative-sticky"``), static membership
(``group_instance_id=...``), the idempotent producer, and a faster client.
Both Kafka backends read and write the same records: keys are partitioned
with Kafka's murmur2 (librdkafka's ``murmur2_random``, the Java client's
choice), so a key lands on the same partition whichever backend sent it,
and a consumer group may move from one backend to the other keeping its
offsets. Keyless records go one partition per batch, or record by record
with ``partitioner="round_robin"`` (see :mod:`..partitioning`).

Nothing waits on the event loop: each client's blocking calls run on a
thread of its own (:mod:`.thread`). A producer has a second thread
that serves delivery reports; each batch is counted down there and resolved
on the loop with one ``call_soon_threadsafe`` per poll, not a future per
record. Consuming is in :mod:`.consumer`, options in
:mod:`.options`, admin operations in :mod:`.admin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from ....errors import AuthenticationError, BusError, BusUnavailable, ConfigurationError
from ...base import (
    Backend,
    GroupInfo,
    OffsetReset,
    PartitionLag,
    Record,
    Subscription,
    TopicInfo,
)
from ..partitioning import RoundRobin, round_robin_wanted
from ..url import check_plaintext_sasl, parse_url
from .admin import ConfluentAdmin
from .consumer import ConfluentSubscription
from .errors import AUTH_CODES, librdkafka_log, raise_ours, to_ours
from .options import Role, option_names, scoped, to_librdkafka
from .thread import ClientThread, bounded, quiet

__all__ = ["ConfluentBackend"]

log = logging.getLogger("mlops_async.confluent")
T = TypeVar("T")

# Values never shown in an error message.
_SECRETS = ("sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
            "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.credentials.client.secret",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem")

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    # The Producer hands over whole batches already: librdkafka's own 5 ms linger
    # would only add latency at low load (p99 ~20 ms on Tansu; ~7 ms with 1 ms).
    "linger.ms": 1,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    # Low latency at low load (librdkafka's default is 500 ms); large fetches when busy.
    # Brokers that hold a fetch for its whole wait (Tansu) add up to this much to every
    # record's latency (p99 ~10 ms at 10 ms, ~7 ms at 5 ms); an idle consumer polls
    # each broker this often: raise fetch_max_wait_ms for many idle consumers.
    "fetch.wait.max.ms": 5,
    # librdkafka (>= 2.3) stops fetching a partition for this long whenever its local
    # queue is above queued.min.messages, which a busy consumer's read-ahead keeps it at:
    # at the default 1000 ms a backlog was read in bursts with 0.5-1 s gaps (~130k/s on
    # Tansu, ~250k/s at 10 ms). A check that finds the queue still full costs nothing.
    "fetch.queue.backoff.ms": 10,
    # A consumer that subscribes first may create the topic, as on kafka://.
    "allow.auto.create.topics": True,
}
_OWN: dict[str, Any] = {
    # Kafka's (and the aiokafka backend's) partitioner: a key lands on the same
    # partition whichever backend sent it (keyless batches: see enqueue).
    "partitioner": "murmur2_random",
}
# Producer only: failed records are reported one by one, confirmed ones are counted
# (see _Batch); librdkafka's client does not accept this one on a consumer.
_OWN_PRODUCER: dict[str, Any] = {"delivery.report.only.error": True}
# How long a first send waits for a topic the broker is still creating (see _learn).
_LEARN_WAIT = 5.0
# How often the partition counts of topics written to are asked again, so keyless
# records reach partitions added meanwhile (aiokafka's metadata refresh does this there).
_RELEARN_EVERY = 60.0
_ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA: librdkafka's partitioner picks one


class _Batch:
    """Records handed to librdkafka together; settled once librdkafka holds none of them.

    librdkafka reports only failed records (``delivery.report.only.error``): a
    report per confirmed record (a Python call and a message object each) cost
    a fifth of the producer's throughput. A batch is confirmed when, after it
    was handed over whole, librdkafka's queue was seen empty: every record
    handed over before then was delivered or reported failed (see ``_poll_loop``).
    """

    __slots__ = ("end", "error", "expected", "future")

    def __init__(self, future: asyncio.Future[None], n: int) -> None:
        self.future = future
        self.expected = n
        self.error: KafkaError | None = None
        self.end = 0  # its number among batches handed over whole; 0 until it is

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's report of a failed record, on a client thread: never touches the loop."""
        if err is not None and self.error is None:
            self.error = err


class ConfluentBackend(Backend):
    """A Kafka cluster through librdkafka; one instance per Producer, Consumer or Admin.

    Options: librdkafka's dotted names (``**{"session.timeout.ms": 6000}``) and
    the aiokafka-style names (``session_timeout_ms=6000``), where they map;
    anything else raises :class:`ConfigurationError` here, naming the closest
    known option. ``publish_timeout`` and ``connect_timeout`` are seconds.
    """

    scheme = "kafka+confluent"

    def __init__(self, bootstrap_servers: str, **options: Any) -> None:
        self.bootstrap_servers = bootstrap_servers
        library, conf = to_librdkafka(options)
        self.publish_timeout = float(library.get("publish_timeout", 30.0))
        self.connect_timeout = float(library.get("connect_timeout", 10.0))
        poll_records = library.get("max_poll_records")
        self._max_poll_records = int(poll_records) if poll_records else None
        conf = {k: v for k, v in conf.items() if v is not None}  # None: aiokafka's "not set"
        protocol = str(conf.get("security.protocol", ""))
        mechanism = str(conf.get("sasl.mechanism", conf.get("sasl.mechanisms", "")))
        check_plaintext_sasl(mechanism, protocol, bool(library.get("allow_plaintext_sasl")))
        if "ssl.ca.location" in conf or "ssl.certificate.location" in conf:
            conf.setdefault("security.protocol", "SASL_SSL" if mechanism else "SSL")
        self._conf = conf
        self.max_record_size = int(conf.get("message.max.bytes", 1_000_000)) - 512
        self._producer: Producer | None = None
        self._thread: ClientThread | None = None
        self._connected = False
        self._poller: asyncio.Future[None] | None = None
        self._stop_polling = threading.Event()
        self._handed = 0  # batches handed over whole (the loop writes, the poll thread reads)
        self._confirmed = 0  # batches 1.._confirmed are settled (the poll thread writes)
        self._open: list[_Batch] = []  # enqueued, not yet resolved (loop only)
        self._known_topics: set[str] = set()  # librdkafka has their metadata
        self._partitions: dict[str, int] = {}  # partition counts, where the broker said
        # Which partition the next keyless batch goes to (from a random one, so that
        # short-lived producers do not all start on partition 0).
        self._turn = random.randrange(1 << 16)
        self._round_robin = round_robin_wanted(library.get("partitioner"), self.scheme)
        self._turns = RoundRobin(self._partitions, _ANY_PARTITION)  # round-robin's turns
        self._relearn_at = 0.0  # loop time of the next refresh of the partition counts
        self._progress: asyncio.Event | None = None
        self._last_error: KafkaError | None = None
        self._admin = ConfluentAdmin(
            lambda: self._build(AdminClient, self._client_conf("admin")),
            self._probe, self.publish_timeout)
        self._subs: set[ConfluentSubscription] = set()
        self._closed = False

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """Every option name this backend takes (or refuses with a reason of its own)."""
        return option_names()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ConfluentBackend:
        """``kafka+confluent://[user:password@]host:9092[,host2:9092][?sasl_mechanism=...]``.

        Credentials in the URL mean SASL (``PLAIN`` unless ``sasl_mechanism``
        says ``SCRAM-SHA-256``/``SCRAM-SHA-512``) over TLS (``SASL_SSL``), or
        over plain TCP with ``allow_plaintext_sasl=True``. Raises
        :class:`ConfigurationError` for a malformed URL or unknown option.
        """
        servers = parse_url(url, options, user="sasl.username", password="sasl.password")
        return cls(servers, **options)

    def __repr__(self) -> str:  # never shows credentials
        return f"ConfluentBackend({self.bootstrap_servers!r})"

    def _client_conf(self, role: Role) -> dict[str, Any]:
        return {
            **scoped(self._conf, role),
            "bootstrap.servers": self.bootstrap_servers,
            "error_cb": self._on_error,
            "logger": librdkafka_log,
        }

    def _build(self, factory: Callable[[dict[str, Any]], T], conf: dict[str, Any]) -> T:
        """A librdkafka client; a configuration it refuses is a ConfigurationError
        whose message never shows a secret."""
        try:
            return factory(conf)
        except (KafkaException, ValueError, TypeError) as exc:
            text = str(exc)
            for k in _SECRETS:
                if isinstance(conf.get(k), str) and conf[k]:
                    text = text.replace(conf[k], "***")
            raise ConfigurationError(f"librdkafka refused the configuration: {text}") from None

    def _probe(self, group: str | None) -> Consumer:
        """A consumer that reads offsets and never joins a group (admin operations)."""
        conf = self._client_conf("consumer")
        conf.update({"group.id": group or "mlops-async-probe", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "fetch.wait.max.ms": 10})
        return self._build(Consumer, conf)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (on a client thread): kept for diagnosis."""
        self._last_error = err
        if err.code() in AUTH_CODES or err.fatal():
            librdkafka_log.error("%s", err.str())
        else:
            librdkafka_log.debug("%s", err.str())

    def _explain(self, exc: BaseException, what: str) -> NoReturn:
        """Raise our error for a failed connection, telling a refused login from an outage."""
        last = self._last_error
        if last is not None and last.code() in AUTH_CODES:
            raise AuthenticationError(
                f"{what}: the broker refused the credentials ({last.str()})") from exc
        raise_ours(exc, what)

    # -- connection -----------------------------------------------------------

    async def connect(self) -> None:
        """Create the producer and check the cluster answers within ``connect_timeout``.

        Raises :class:`BusUnavailable` (or :class:`AuthenticationError`) if not;
        the client stays, and reconnects by itself once the broker is back.
        """
        if self._closed:
            raise BusUnavailable("the backend is closed")
        if self._producer is None:
            conf = {**_PRODUCER_DEFAULTS, **self._client_conf("producer"), **_OWN,
                    **_OWN_PRODUCER}
            # librdkafka gives up on a record when we do, so a record we report as
            # failed (and the Producer sends again) is never delivered twice by it.
            conf.setdefault("message.timeout.ms", int(self.publish_timeout * 1000))
            self._producer = self._build(Producer, conf)
            self._thread = ClientThread("confluent-producer", workers=2)
            self._progress = asyncio.Event()
            self._stop_polling.clear()
            self._poller = self._thread.run(self._poll_loop, asyncio.get_running_loop())
            self._relearn_at = asyncio.get_running_loop().time() + _RELEARN_EVERY
        if self._connected:
            return
        assert self._thread is not None
        what = f"cannot connect to {self.bootstrap_servers}"
        try:
            await bounded(self._thread.run(self._producer.list_topics, None,
                                           self.connect_timeout),
                          self.connect_timeout + 5, what)
        except BusError:
            raise
        except Exception as exc:
            self._explain(exc, what)
        self._connected = True

    async def close(self) -> None:
        """Close subscriptions, wait (bounded) for records in flight, stop the threads."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.close()
        self._admin.close()
        producer, self._producer = self._producer, None
        thread, self._thread = self._thread, None
        if producer is None or thread is None:
            return
        self._stop_polling.set()
        try:
            if self._poller is not None:
                await bounded(self._poller, 5, "stop polling")
            handed = self._handed  # before flush(): every one of these is in its queue
            left = await bounded(thread.run(producer.flush, 10.0), 15, "flush")
            if left:
                log.warning("closing: %d record(s) not confirmed by the broker", left)
                await bounded(thread.run(self._purge, producer), 5, "purge")
            else:
                self._settle(handed)  # flush() served the reports of any that failed
        except Exception as exc:  # closing never raises past us
            log.debug("closing the confluent producer: %r", exc)
        finally:
            thread.shutdown()
            self._settle(0, closed=True)  # what is left was not confirmed

    @staticmethod
    def _purge(producer: Producer) -> None:
        producer.purge()
        producer.poll(0)  # the purged records' reports fail their batches

    # -- publishing -----------------------------------------------------------

    def _poll_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The producer's report thread: serve reports, confirm batches once the queue is empty.

        ``len(producer)`` counts every record librdkafka still holds (queued, in
        flight, or with its report not served yet). Read after ``_handed``, zero
        means every batch counted there was delivered, or its failed records
        reported to it. A busy producer reaches zero often: the Producer keeps a
        few batches in flight and waits for the oldest.
        """
        producer = self._producer
        assert producer is not None
        while not self._stop_polling.is_set():
            try:
                producer.poll(0.1)
            except Exception as exc:  # a report thread that died would hang every send
                log.exception("confluent producer poll: %r", exc)
            handed = self._handed
            if handed > self._confirmed and len(producer) == 0:
                self._confirmed = handed
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._settle, handed)

    def _settle(self, upto: int, closed: bool = False) -> None:
        """On the loop: resolve the batches numbered up to ``upto`` (all of them, closing)."""
        keep: list[_Batch] = []
        for b in self._open:
            confirmed = 0 < b.end <= upto
            if not confirmed and not closed:
                keep.append(b)
                continue
            if b.future.done():
                continue
            if b.error is not None:
                err = to_ours(KafkaException(b.error), f"publishing {b.expected} record(s)")
                b.future.set_exception(err)
            elif confirmed:
                b.future.set_result(None)
            else:  # closed before the broker confirmed them
                b.future.set_exception(BusUnavailable(
                    f"closed before the broker confirmed {b.expected} record(s)"))
            if b.future.done() and not b.future.cancelled():
                b.future.exception()  # nobody may be waiting any more: never "never retrieved"
        self._open = keep
        if self._progress is not None:
            self._progress.set()

    async def publish(self, records: Sequence[Record]) -> None:
        await (await self.enqueue(records))

    async def enqueue(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Hand a batch to librdkafka in order; the future resolves when all of it is confirmed.

        Raises :class:`BusUnavailable` when librdkafka's queue stays full for
        ``publish_timeout`` (the broker is away); records handed over before
        that are still delivered, so the caller's retry may duplicate them.
        """
        if self._producer is None:
            await self.connect()
        producer = self._producer
        assert producer is not None
        topics = {r.topic for r in records}
        new_topics = topics - self._known_topics
        if new_topics:
            await self._learn(new_topics)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._relearn_at:
            self._relearn(loop.time())
        # A keyless batch goes to one partition, in order (keyed records: librdkafka's
        # murmur2). librdkafka's own sticky choice for keyless records picks again for
        # each record while the partition's leader is not connected yet (the first
        # sends of a producer), scattering a batch over every partition.
        spread: Mapping[str, int] | RoundRobin
        if self._round_robin:
            spread = self._turns  # indexing it takes a turn: the next partition, per record
        else:
            turn, counts = self._turn, self._partitions
            self._turn += 1
            spread = {t: turn % counts[t] if t in counts else _ANY_PARTITION for t in topics}
        batch = _Batch(loop.create_future(), len(records))
        if not records:
            batch.future.set_result(None)
            return batch.future
        self._open.append(batch)
        report = batch.report
        produce = producer.produce
        try:
            for r in records:
                part = _ANY_PARTITION if r.key is not None else spread[r.topic]
                try:
                    # Positional (topic, value, key, partition, on_delivery): librdkafka's
                    # client parses keyword arguments for each call, ~0.5 us a record.
                    if r.headers:
                        produce(r.topic, r.value, r.key, part, report, None, 0,
                                list(r.headers))
                    else:
                        produce(r.topic, r.value, r.key, part, report)
                except BufferError:
                    await self._produce_when_room(produce, r, part, report)
        except BaseException as exc:
            # Records handed over still get reports, which find the batch abandoned.
            self._open.remove(batch)
            batch.future.cancel()
            if isinstance(exc, BusError | asyncio.CancelledError):
                raise
            raise_ours(exc, f"publishing {len(records)} record(s)")
        batch.end = self._handed + 1
        self._handed = batch.end  # after the last produce(): the poll thread may count it now
        return batch.future

    async def _learn(self, topics: set[str]) -> None:
        """Fetch metadata for topics not written to yet (creating them, if the broker does).

        librdkafka partitions the records of a topic it knows nothing about one
        by one as its metadata arrives, scattering a keyless batch over every
        partition; once the partitions are known, a keyless batch goes to one
        of them (in order), as on kafka://. A topic the broker is still
        creating (the first answer has no partitions, or no leaders yet) is asked
        again, for up to ``_LEARN_WAIT`` s. If the broker does not answer, the
        records go out anyway (librdkafka holds them until it does).
        """
        producer, thread = self._producer, self._thread
        assert producer is not None and thread is not None
        loop = asyncio.get_running_loop()
        for topic in sorted(topics):
            deadline = loop.time() + min(self.connect_timeout, _LEARN_WAIT)
            while True:
                try:
                    meta = await bounded(
                        thread.run(producer.list_topics, topic, self.connect_timeout),
                        self.connect_timeout + 5, f"metadata of {topic}")
                except Exception as exc:
                    log.debug("no metadata for %s yet: %r", topic, exc)
                    return
                info = meta.topics.get(topic)
                if info is not None and info.error is None and info.partitions and all(
                        p.error is None and p.leader >= 0 for p in info.partitions.values()):
                    self._partitions[topic] = len(info.partitions)
                    break
                if loop.time() >= deadline:
                    log.debug("%s has no partitions with leaders yet: records go anyway", topic)
                    break
                await asyncio.sleep(0.05)
            self._known_topics.add(topic)

    def _relearn(self, now: float) -> None:
        """Ask for the partition counts of the topics written to, in the background."""
        self._relearn_at = now + _RELEARN_EVERY
        producer, thread = self._producer, self._thread
        if producer is None or thread is None or self._closed:
            return
        for topic in list(self._partitions):
            fut = thread.run(producer.list_topics, topic, self.connect_timeout)
            fut.add_done_callback(quiet)  # no answer: the count stays as it was
            fut.add_done_callback(self._relearned)

    def _relearned(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        for topic, info in fut.result().topics.items():
            if topic in self._partitions and info.error is None and info.partitions:
                self._partitions[topic] = len(info.partitions)

    async def _produce_when_room(
        self, produce: Callable[..., None], r: Record, part: int, report: Callable[..., None]
    ) -> None:
        """librdkafka's queue is full: wait for confirmations (bounded), then hand ``r`` over."""
        assert self._progress is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        headers = list(r.headers) if r.headers else None
        while True:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._progress.wait()
            try:
                produce(r.topic, r.value, r.key, part, report, None, 0, headers)
                return
            except BufferError:
                if loop.time() > deadline:
                    raise BusUnavailable(
                        "publishing: librdkafka's queue stayed full for "
                        f"{self.publish_timeout:g} s (is the broker away?)") from None

    # -- consuming ------------------------------------------------------------

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        group: str | None,
        auto_offset_reset: OffsetReset,
    ) -> Subscription:
        """Join ``group`` (or, without one, read every partition) on a thread of its own.

        Raises :class:`BusUnavailable` when the broker does not answer within
        ``connect_timeout``.
        """
        if self._closed:
            raise BusUnavailable("the backend is closed")
        conf = {**_CONSUMER_DEFAULTS, **self._client_conf("consumer")}
        conf.update({
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "group.id": group or "mlops-async-broadcast",  # never joined without a group
        })
        sub = ConfluentSubscription(
            lambda c: self._build(Consumer, c), conf, list(topics), group, auto_offset_reset,
            connect_timeout=self.connect_timeout, commit_timeout=self.publish_timeout,
            max_records=self._max_poll_records, on_close=self._subs.discard)
        try:
            await sub.start()
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, BusError | asyncio.CancelledError):
                raise
            self._explain(exc, f"cannot subscribe to {list(topics)}")
        self._subs.add(sub)
        return sub

    # -- admin ----------------------------------------------------------------

    async def list_topics(self) -> list[TopicInfo]:
        """Topics with partition counts and the number of records written (end offsets)."""
        return await self._admin.list_topics()

    async def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        return await self._admin.partition_counts(topics)

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: dict[str, str] | None = None,
    ) -> None:
        await self._admin.create_topic(name, partitions, replication, config)

    async def delete_topic(self, name: str) -> None:
        await self._admin.delete_topic(name)

    async def describe_groups(self) -> list[GroupInfo]:
        return await self._admin.describe_groups()

    async def group_lag(self, group: str) -> list[PartitionLag]:
        return await self._admin.group_lag(group)
