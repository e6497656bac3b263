"""Kafka-specific behaviour against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mlops_async import (
    Admin,
    BusUnavailable,
    ConfigurationError,
    Consumer,
    MessageTooLarge,
    MLOpsMessage,
    Producer,
)
from mlops_async.backends import create_backend
from mlops_async.backends.kafka.aio import KafkaBackend

from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
from ..brokers import free_port, tansu_server
from ..conftest import make_msg

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def consumer(url: str, topic: str, group: str | None, **kw: object) -> Consumer[MLOpsMessage]:
    return Consumer(
        url,
        topic=topic,
        group=group,
        auto_offset_reset="earliest",
        **{**KAFKA_CONSUMER_OPTIONS, **kw},
    )  # type: ignore[arg-type]


@pytest.fixture
def url(kafka_bootstrap: str) -> str:
    return f"kafka://{kafka_bootstrap}"


async def make_topic(url: str, partitions: int) -> str:
    topic = name("kt")
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=partitions)
    return topic


async def produce(url: str, topic: str, n: int, *, last: bool = False, start: int = 0) -> None:
    async with Producer(url, topic=topic) as p:
        for i in range(start, start + n):
            extra = {"last": True} if last and i == start + n - 1 else {}
            await p.send(make_msg(i, **extra), key=str(i))
        await p.flush()


@pytest.mark.parametrize("members", [2, 3])
async def test_group_members_split_a_three_partition_topic(url: str, members: int) -> None:
    topic, group = await make_topic(url, 3), name("g")
    n = 600
    seen: list[list[int]] = [[] for _ in range(members)]
    consumers = [consumer(url, topic, group) for _ in range(members)]
    for c in consumers:
        await c.start()
    try:
        # Let every member join before producing, so the work is split, not rebalanced.
        await asyncio.gather(*(c.get_messages(timeout=6) for c in consumers))
        await produce(url, topic, n)

        async def run(k: int) -> None:
            while len({i for s in seen for i in s}) < n:
                got = await consumers[k].get_messages(timeout=0.5)
                seen[k] += [m.additional_arguments["i"] for m in got]

        await asyncio.wait_for(asyncio.gather(*(run(k) for k in range(members))), 90)
    finally:
        for c in consumers:
            await c.close()
    together = [i for s in seen for i in s]
    assert set(together) == set(range(n)), "every message processed"
    # At-least-once: a late rebalance may hand a few unacknowledged ones to another member.
    assert len(together) - n <= n // 2, f"{len(together) - n} duplicates"
    assert sum(1 for s in seen if s) >= 2, "the work was spread over members"


def start_worker(
    url: str, topic: str, group: str, out: str, delay: float = 0.0
) -> subprocess.Popen[bytes]:
    with open(out + ".err", "wb") as err:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.worker",
                url,
                topic,
                group,
                out,
                str(delay),
                json.dumps(KAFKA_CONSUMER_OPTIONS),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def lines(path: str) -> list[int]:
    text = Path(path).read_text() if os.path.exists(path) else ""
    return [int(x) for x in text.split() if x.isdigit()]


async def wait_ready(paths: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(os.path.exists(p) and "ready" in Path(p).read_text() for p in paths):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("workers did not start")


@pytest.mark.slow
async def test_separate_processes_share_a_group(url: str) -> None:
    topic, group = await make_topic(url, 3), name("g")
    tmp = tempfile.mkdtemp()
    outs = [os.path.join(tmp, f"w{k}.txt") for k in range(2)]
    procs = [start_worker(url, topic, group, out) for out in outs]
    try:
        await wait_ready(outs)
        await produce(url, topic, 300)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(lines(outs[0]) + lines(outs[1])) < 300:
            await asyncio.sleep(0.2)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
    together = lines(outs[0]) + lines(outs[1])
    assert set(together) == set(range(300))
    assert lines(outs[0]) and lines(outs[1]), "both processes got partitions"


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(url: str) -> None:
    topic, group = await make_topic(url, 3), name("g")
    tmp = tempfile.mkdtemp()
    victim_out = os.path.join(tmp, "victim.txt")
    victim = start_worker(url, topic, group, victim_out, delay=0.01)
    try:
        await wait_ready([victim_out])
        n = 400
        await produce(url, topic, n)
        deadline = time.monotonic() + 60
        while len(lines(victim_out)) < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert lines(victim_out), "the victim processed something before the kill"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivor = consumer(url, topic, group)
        async with survivor:
            got: list[int] = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                got += [m.additional_arguments["i"] for m in await survivor.get_messages(timeout=1)]
                if set(got) | set(lines(victim_out)) >= set(range(n)):
                    break
    finally:
        if victim.poll() is None:
            victim.kill()
    everything = Counter(lines(victim_out) + got)
    assert set(everything) == set(range(n)), "zero lost"
    duplicates = sum(c - 1 for c in everything.values())
    print(f"SIGKILL test: {duplicates} duplicate(s) of {n}")


async def test_consumer_that_crashes_hands_its_records_to_the_group(url: str) -> None:
    topic, group = await make_topic(url, 1), name("g")
    await produce(url, topic, 20)
    done: list[int] = []
    with pytest.raises(RuntimeError):
        async with consumer(url, topic, group) as c:
            async for m in c:
                if m.additional_arguments["i"] == 10:
                    raise RuntimeError("boom")
                done.append(m.additional_arguments["i"])
    async with consumer(url, topic, group) as c:
        rest: list[int] = []
        while len(rest) < 10:
            rest += [m.additional_arguments["i"] for m in await c.get_messages(timeout=10)]
    assert done == list(range(10)) and rest[0] == 10
    assert set(done) | set(rest) == set(range(20))


async def test_rebalance_while_processing_loses_nothing(url: str) -> None:
    topic, group = await make_topic(url, 4), name("g")
    n = 400
    await produce(url, topic, n)
    seen: list[int] = []
    a = consumer(url, topic, group, prefetch=50)
    b = consumer(url, topic, group, prefetch=50)
    await a.start()

    async def slow(c: Consumer[MLOpsMessage]) -> None:
        async for m in c:
            seen.append(m.additional_arguments["i"])
            await asyncio.sleep(0.002)
            if set(seen) >= set(range(n)):
                return

    task_a = asyncio.create_task(slow(a))
    while len(seen) < 50:
        await asyncio.sleep(0.05)
    await b.start()  # joins mid-stream: partitions move while A is processing
    task_b = asyncio.create_task(slow(b))
    _, pending = await asyncio.wait(
        [task_a, task_b], timeout=90, return_when=asyncio.FIRST_COMPLETED
    )
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await a.close()
    await b.close()
    assert set(seen) == set(range(n))


async def test_keys_pick_partitions_like_the_java_client_and_headers_travel(url: str) -> None:
    topic = await make_topic(url, 3)
    async with Producer(url, topic=topic) as p:
        for i in range(30):
            await p.send(make_msg(i), key=f"user-{i % 3}", headers={"trace": f"t{i}"})
        await p.flush()
    be = create_backend(url)
    await be.connect()
    sub = await be.subscribe([topic], group=None, auto_offset_reset="earliest")
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 30 and time.monotonic() < deadline:
        got += await sub.fetch(100, 1.0)
    await sub.close()
    await be.close()
    by_key: dict[bytes, set[int]] = {}
    for d in got:
        assert d.key is not None
        by_key.setdefault(d.key, set()).add(d.partition)
    assert all(len(parts) == 1 for parts in by_key.values()), "one key, one partition"
    assert {h for d in got for h in (d.headers or ())} >= {("trace", b"t0")}


async def test_no_group_reads_every_partition(url: str) -> None:
    topic = await make_topic(url, 3)
    await produce(url, topic, 30)
    async with Consumer(url, topic=topic, auto_offset_reset="earliest") as c:
        got: list[int] = []
        while len(got) < 30:
            got += [m.additional_arguments["i"] for m in await c.get_messages(timeout=5)]
    assert sorted(got) == list(range(30))


async def test_admin_every_method(url: str) -> None:
    topic, group = name("adm"), name("g")
    async with Admin(url) as admin:
        await admin.create_topic(topic, partitions=3)
        await admin.create_topic(topic, partitions=3)  # exists: not an error
        topics = {t.name: t for t in await admin.list_topics()}
        assert topics[topic].partitions == 3
        await produce(url, topic, 30)
        async with consumer(url, topic, group) as c:
            got = 0
            while got < 20:
                got += len(await c.get_messages(timeout=5, max_messages=20 - got))
            await c.commit()
        lag = await admin.group_lag(group)
        assert sum(p.end_offset for p in lag) == 30
        assert sum(p.lag for p in lag) == 10
        assert sum(p.committed or 0 for p in lag) == 20
        groups = {g.group: g for g in await admin.describe_groups()}
        assert group in groups and sum(p.lag for p in groups[group].lag) == 10
        await admin.delete_topic(topic)
        await admin.delete_topic(topic)  # missing: not an error
        assert topic not in {t.name for t in await admin.list_topics()}


async def test_lenient_producer_started_before_the_broker_delivers_once_it_is_up() -> None:
    server = tansu_server()
    url = f"kafka://127.0.0.1:{server.port}"
    p = Producer(url, topic="early", connect_timeout=1.0, publish_timeout=2.0)
    await p.start()  # no broker yet: lenient mode starts anyway
    for i in range(10):
        await p.send(make_msg(i))
    await asyncio.sleep(0.5)
    assert p.stats()["outage"]
    server.start()
    try:
        await p.flush(timeout=60)  # explicit: a lenient flush stops at flush_timeout
        await p.close()
        async with consumer(url, "early", name("g")) as c:
            got: list[int] = []
            while len(got) < 10:
                got += [m.additional_arguments["i"] for m in await c.get_messages(timeout=10)]
        assert sorted(got) == list(range(10))
    finally:
        await p.close()
        server.stop()


async def test_broker_killed_and_restarted_producer_resumes() -> None:
    server = tansu_server()
    server.start()
    url = f"kafka://127.0.0.1:{server.port}"
    try:
        async with Producer(url, topic="restart", publish_timeout=2.0) as p:
            await p.send(make_msg(0), flush=True)
            server.stop(kill=True)
            for i in range(1, 6):
                await p.send(make_msg(i))  # lenient: queued, not raised
            await asyncio.sleep(1.0)
            server.start()  # in-memory broker: earlier data is gone, new sends arrive
            await p.flush(timeout=60)  # explicit: a lenient flush stops at flush_timeout
            assert p.stats()["buffered"] == 0
    finally:
        server.stop()


async def test_strict_mode_raises_quickly_without_a_broker() -> None:
    port = free_port()
    p = Producer(f"kafka://127.0.0.1:{port}", topic="x", strict=True, connect_timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(BusUnavailable):
        await p.start()
    assert time.monotonic() - t0 < 30  # bounded by connect_timeout, not a hang
    c = Consumer(f"kafka://127.0.0.1:{port}", topic="x", strict=True, connect_timeout=2.0)
    with pytest.raises(BusUnavailable):
        await c.start()
    await c.close()


def test_owned_and_unknown_options_are_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="at-least-once"):
        create_backend("kafka://h:9092", enable_auto_commit=True)
    with pytest.raises(ConfigurationError, match="serialises"):
        create_backend("kafka://h:9092", value_serializer=str.encode)
    with pytest.raises(ConfigurationError, match="acks_please"):
        create_backend("kafka://h:9092", acks_please=1)
    be = create_backend("kafka://h1:9092,h2:9092", acks=1, max_poll_records=10, api_version="auto")
    assert isinstance(be, KafkaBackend) and be.bootstrap_servers == "h1:9092,h2:9092"


def test_sasl_plain_without_tls_is_refused_and_secrets_never_show() -> None:
    secret = "s3cr3t-passw0rd"
    with pytest.raises(ConfigurationError, match="clear text") as info:
        create_backend(
            "kafka://h:9092",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="u",
            sasl_plain_password=secret,
        )
    assert secret not in str(info.value)
    be = create_backend(
        "kafka://h:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="u",
        sasl_plain_password=secret,
        allow_plaintext_sasl=True,
    )
    assert secret not in repr(be)
    scram = create_backend(
        "kafka://h:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="u",
        sasl_plain_password=secret,
    )
    assert secret not in repr(scram)
    assert "ssl_context" in scram._security  # TLS context made for SASL_SSL


async def test_oversize_record_is_refused_at_send_not_silently_dropped(url: str) -> None:
    topic = await make_topic(url, 1)
    async with Producer(
        url, topic=topic, max_message_size=4 * 1024 * 1024, max_request_size=100_000
    ) as p:
        with pytest.raises(MessageTooLarge, match="exceeds the limit"):
            await p.send(make_msg(0, blob="x" * 300_000))
        await p.send(make_msg(1), flush=True)  # the producer carries on


@pytest.mark.parametrize("codec", ["gzip"])
async def test_compressed_batches_round_trip(url: str, codec: str) -> None:
    topic = await make_topic(url, 1)
    async with Producer(url, topic=topic, compression_type=codec) as p:
        await p.send_many([make_msg(i, blob="x" * 2000) for i in range(50)], flush=True)
    async with consumer(url, topic, name("g")) as c:
        got: list[int] = []
        while len(got) < 50:
            got += [m.additional_arguments["i"] for m in await c.get_messages(timeout=10)]
    assert got == list(range(50))


async def test_idempotent_producer_works_or_fails_clearly(url: str) -> None:
    """Apache Kafka (KAFKA_BOOTSTRAP) delivers; Tansu refuses idempotence with a clear error."""
    from mlops_async import BusError

    topic = await make_topic(url, 1)
    p = Producer(url, topic=topic, enable_idempotence=True, strict=True, connect_timeout=10.0)
    try:
        await p.start()
        await p.send(make_msg(1), flush=True)
    except BusError as exc:
        assert not os.environ.get("KAFKA_BOOTSTRAP"), f"real Kafka refused idempotence: {exc}"
        assert str(exc), "the error says what went wrong"
    else:
        async with consumer(url, topic, name("g")) as c:
            assert [m.additional_arguments["i"] for m in await c.get_messages(timeout=10)] == [1]
    finally:
        await p.close()
