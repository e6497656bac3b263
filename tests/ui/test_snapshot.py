"""What the page is sent: figures per stage, replica and queue, from heartbeats, the Admin and
dead letters; and the poller that reads them only while someone watches."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

import pytest

from mlops_async import App, MessageBuilder, MessageType, Pipeline, Producer
from mlops_async.app.heartbeat import ReplicaStats, replica_state
from mlops_async.top import QueueRow
from mlops_async.ui.graph import graph_of
from mlops_async.ui.snapshot import Watch, compose, decode_original

from ..conftest import make_msg
from .uipipe import pipeline

NOW = 1000.0


def beat(app: str, replica: str, *, state: str = "running", at: float = NOW, run: str = "",
         processed: int = 10, in_rate: float = 5.0) -> ReplicaStats:
    return ReplicaStats(app=app, stage=app, replica=replica, host="h", pid=1,
                        processed=processed, failed=1, published=processed, in_rate=in_rate,
                        out_rate=in_rate, at=at, every=1.0, state=state, run=run)


def test_a_replica_that_stops_beating_is_silent_and_one_that_said_goodbye_is_not() -> None:
    assert replica_state(beat("a", "r", at=NOW - 2.9), NOW) == "running"
    assert replica_state(beat("a", "r", at=NOW - 3.1), NOW) == "silent"
    assert replica_state(beat("a", "r", state="idle", at=NOW - 9), NOW) == "silent"
    assert replica_state(beat("a", "r", state="stopped", at=NOW - 99), NOW) == "stopped"
    assert replica_state(beat("a", "r", state="ended", at=NOW - 99), NOW) == "ended"


def test_stage_figures_sum_live_replicas_and_show_each_state() -> None:
    g = graph_of([pipeline])
    beats = [beat("uit.parse", "r1"), beat("uit.parse", "r2", at=NOW - 10, in_rate=7.0),
             beat("uit.sink", "s1", state="draining")]
    rows = [QueueRow("uit.in", written=100, lag=40, in_rate=3.0, out_rate=2.0, dead_letters=2,
                     groups=["uit.parse"])]
    snap = compose(g, rows, beats, now=NOW, growing={"uit.in"}, url="redis://:pw@h:6379/0")
    parse = snap["stages"]["parse"]
    assert parse["state"] == "silent"  # one silent replica is what the stage shows
    assert [r["state"] for r in parse["replicas"]] == ["running", "silent"]
    assert parse["in_rate"] == 5.0  # a silent replica's last rate is not counted
    assert parse["processed"] == 20 and parse["failed"] == 2 and parse["backlog"] == 40
    assert parse["progress"] is None  # not a finite run
    assert snap["stages"]["sink"]["state"] == "draining"
    q = snap["queues"]["uit.in"]
    assert (q["backlog"], q["dead_letters"], q["growing"], q["dlq"]) == (40, 2, True, "uit.in.dlq")
    assert snap["queues"]["uit.mid"]["backlog"] is None  # nothing known yet
    assert snap["queues"]["uit.mid"]["dlq"] == "uit.mid.dlq"
    assert "pw" not in snap["url"]
    assert {n["id"]: (n["col"], n["row"]) for n in snap["nodes"]} == {
        "q:uit.in": (0, 0), "s:parse": (1, 0), "q:uit.mid": (2, 0), "s:sink": (3, 0)}


def test_a_finite_run_shows_progress_then_its_end_and_forgets_earlier_runs() -> None:
    g = graph_of([pipeline])
    rows = [QueueRow("uit.in", lag=30)]
    beats = [beat("uit.parse", "old", state="ended", at=NOW - 50, run="run1"),
             beat("uit.parse", "r1", run="run2", processed=90)]
    parse = compose(g, rows, beats, now=NOW)["stages"]["parse"]
    assert [r["id"] for r in parse["replicas"]] == ["r1"] and parse["run"] == "run2"
    assert parse["progress"] == 0.75  # 90 done, 30 waiting
    beats.append(beat("uit.parse", "r1", state="ended", at=NOW + 1, run="run2", processed=120))
    parse = compose(g, [QueueRow("uit.in", lag=0)], beats[-1:], now=NOW + 1)["stages"]["parse"]
    assert (parse["state"], parse["progress"]) == ("ended", 1.0)
    assert compose(g, [], [], now=NOW)["stages"]["sink"]["state"] == "absent"


def test_a_dead_letters_original_is_decoded_when_it_can_be() -> None:
    from mlops_async.codec import Codec

    msg = make_msg(3, x=math.nan)
    decoded = decode_original(Codec().encode(msg))
    assert decoded["id"] == msg.id and decoded["additional_arguments"]["x"] == "nan"
    assert decode_original(Codec(format="json").encode(msg))["id"] == msg.id
    assert decode_original(b'{"a": 1}') == {"a": 1}
    assert decode_original(b"plain words") == {"text": "plain words"}
    assert decode_original(b"\xff\x00\x01") == {"hex": "ff 00 01"}
    assert decode_original(b"\x01\xc1") == {"hex": "01 c1"}  # a broken envelope


async def test_the_watch_reads_a_running_pipeline_on_memory() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    p = Pipeline("snap", url=url, app_options={"heartbeat": 0.1})

    @p.stage(input="in", outputs=["out"], retries=0)
    async def work(msg: Any) -> list[tuple[str, Any]]:
        if msg.additional_arguments.get("poison"):
            raise ValueError("poisoned")
        return [("out", msg)]

    app = p.app_for("work")
    watch = Watch(url, [p], interval=0.1)
    try:
        async with app, Producer(url, topic="in") as out:
            await out.send_many([make_msg(i) for i in range(20)], flush=True)
            await out.send(make_msg(99, poison=True), flush=True)
            snap: dict[str, Any] = {}
            for _ in range(300):
                snap = await watch.snapshot()
                st = snap["stages"]["work"]
                if st["processed"] >= 20 and snap["queues"]["in"]["dead_letters"] == 1 \
                        and watch.letters("in.dlq"):
                    break
                await asyncio.sleep(0.05)
            st = snap["stages"]["work"]
            assert st["failed"] == 1 and st["published"] == 20
            assert [r["state"] for r in st["replicas"]] in (["running"], ["idle"])
            assert snap["queues"]["out"]["written"] == 20
            assert snap["queues"]["in"]["groups"] == ["snap.work"]
            (letter,) = watch.letters("in.dlq")
            assert letter["error_type"] == "ValueError" and letter["handler"] == "work"
            assert letter["original"]["additional_arguments"]["poison"] is True
            assert await watch.replay("in.dlq") == 1  # back to "in", where it fails again
            for _ in range(300):
                if (await watch.snapshot())["queues"]["in"]["dead_letters"] == 2:
                    break
                await asyncio.sleep(0.05)
            assert (await watch.snapshot())["queues"]["in"]["dead_letters"] == 2
        for _ in range(150):  # its last beat: stopped
            st = (await watch.snapshot())["stages"]["work"]
            if st["state"] == "stopped":
                break
            await asyncio.sleep(0.05)
        assert st["state"] == "stopped"
    finally:
        await watch.close()
        await watch.close()


async def test_a_finite_pipeline_ends_stage_by_stage() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    p = Pipeline("fin", url=url, app_options={"heartbeat": 0.1})

    @p.stage(outputs=["rows"])
    async def read() -> Any:
        for i in range(30):
            yield "rows", make_msg(i)

    @p.stage(input="rows")
    async def count(msg: Any) -> None:
        return None

    watch = Watch(url, [p], interval=0.1)
    try:
        await asyncio.wait_for(p.run(install_signals=False), 30)
        snap: dict[str, Any] = {}
        for _ in range(120):
            snap = await watch.snapshot()
            if all(s["state"] == "ended" for s in snap["stages"].values()):
                break
            await asyncio.sleep(0.05)
        for s in snap["stages"].values():
            assert (s["state"], s["progress"]) == ("ended", 1.0) and s["run"]
        assert snap["stages"]["count"]["processed"] == 30
        assert snap["stages"]["read"]["published"] == 30
    finally:
        await watch.close()


async def test_nobody_watching_costs_nothing_and_many_pages_share_one_poll() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    watch = Watch(url, interval=0.2)
    try:
        await asyncio.sleep(0.5)
        assert watch.polls == 0
        pages = [watch.listen() for _ in range(5)]
        t0 = time.monotonic()
        first = [await asyncio.wait_for(q.get(), 5) for q in pages]
        assert len(set(first)) == 1  # one snapshot for every page
        await asyncio.sleep(1.0)
        took = time.monotonic() - t0
        # One poll per interval whatever the number of pages (generous margin).
        assert 1 <= watch.polls <= took / 0.2 + 2
        for q in pages:
            await watch.leave(q)
        polls = watch.polls
        await asyncio.sleep(0.5)
        assert watch.polls == polls  # the last page left: no more polls
        assert watch.latest is None
    finally:
        await watch.close()


async def test_idle_and_draining_states_are_beaten() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    app = App("beats", url=url, heartbeat=0.1)
    release = asyncio.Event()

    @app.handler(input="jobs")
    async def slow(msg: Any) -> None:
        await release.wait()

    watch = Watch(url, [app], interval=0.1)
    try:
        await app.start()
        seen: set[str] = set()

        async def states() -> None:
            snap = await watch.snapshot()
            seen.update(r["state"] for r in snap["stages"]["slow"]["replicas"])

        for _ in range(120):
            await states()
            if "idle" in seen:
                break
            await asyncio.sleep(0.05)
        async with Producer(url, topic="jobs") as out:
            await out.send(MessageBuilder().with_msg_type(MessageType.DATA).build(), flush=True)
        stopping = asyncio.create_task(app.stop())
        for _ in range(120):
            await states()
            if "draining" in seen:
                break
            await asyncio.sleep(0.05)
        release.set()
        await stopping
        await states()
        assert {"idle", "draining", "stopped"} <= seen
    finally:
        await watch.close()


async def test_without_declarations_the_graph_comes_from_running_replicas() -> None:
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    app = App("relay", url=url, heartbeat=0.1)
    app.queue("src", value="t.src")

    @app.handler(input="src", outputs=["dst"])
    async def relay(msg: Any) -> list[tuple[str, Any]]:
        return [("dst", msg)]

    watch = Watch(url, interval=0.1)  # no module: only what the replicas say
    try:
        async with app:
            snap: dict[str, Any] = {}
            for _ in range(120):
                snap = await watch.snapshot()
                if snap["stages"]:
                    break
                await asyncio.sleep(0.05)
        assert snap["declared"] is False
        assert snap["stages"]["relay"]["inputs"] == ["t.src"]
        assert snap["edges"] == [("q:t.src", "s:relay"), ("s:relay", "q:dst")]
    finally:
        await watch.close()


@pytest.mark.kafka
async def test_the_watch_on_kafka(kafka_bootstrap: str) -> None:
    from ..backends.conftest import KAFKA_CONSUMER_OPTIONS
    from .uipipe import FIXED, SEEN, make_pipeline

    url = f"kafka://{kafka_bootstrap}"
    name = f"uik{uuid.uuid4().hex[:6]}"
    p = make_pipeline(name, url, heartbeat=0.3)
    p.app_options["consumer_options"] = dict(KAFKA_CONSUMER_OPTIONS)
    apps = [p.app_for("parse"), p.app_for("sink")]
    # Beats reach the watch through Kafka fetches, late on a busy machine: only a replica
    # that stops beating for good may read as silent here.
    watch = Watch(url, [p], interval=0.2, silent_after=30)
    try:
        for app in apps:
            await app.start()
        async with Producer(url, topic=f"{name}.in") as out:
            await out.send_many([make_msg(i) for i in range(20)], flush=True)
            await out.send(make_msg(-1, poison=True), flush=True)
        snap: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # groups join, then rebalance: slow on a busy machine
        while loop.time() < deadline:
            snap = await watch.snapshot()
            if snap["stages"]["sink"]["processed"] >= 20 and watch.letters(f"{name}.mid.dlq") \
                    and snap["queues"][f"{name}.mid"]["dead_letters"] == 1:
                break
            await asyncio.sleep(0.1)
        assert snap["stages"]["parse"]["processed"] == 21
        assert snap["stages"]["sink"]["failed"] == 1
        assert {r["state"] for r in snap["stages"]["sink"]["replicas"]} <= {"running", "idle"}
        deadline = loop.time() + 30
        while loop.time() < deadline:  # the groups' commits reach the broker a little later
            snap = await watch.snapshot()
            q = snap["queues"][f"{name}.in"]
            if q["groups"] and q["backlog"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (q["groups"], q["backlog"], q["written"]) == ([f"{name}.parse"], 0, 21)
        (letter,) = watch.letters(f"{name}.mid.dlq")
        assert letter["original"]["additional_arguments"]["poison"] is True
        FIXED[name] = True
        assert await watch.replay(f"{name}.mid.dlq") == 1
        deadline = loop.time() + 30
        while -1 not in SEEN[name] and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert -1 in SEEN[name]
        assert await watch.waiting(f"{name}.mid.dlq") == 0
    finally:
        for app in apps:
            await app.stop()
        await watch.close()


async def test_a_poll_asks_the_lag_of_the_pipelines_groups_once_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_async import Admin

    calls: list[str] = []
    group_lag, describe = Admin.group_lag, Admin.describe_groups

    async def counted_lag(self: Admin, group: str) -> Any:
        calls.append(group)
        return await group_lag(self, group)

    async def counted_describe(self: Admin) -> Any:
        calls.append("*every group*")
        return await describe(self)

    monkeypatch.setattr(Admin, "group_lag", counted_lag)
    monkeypatch.setattr(Admin, "describe_groups", counted_describe)
    url = f"memory://ui-{uuid.uuid4().hex[:6]}"
    async with Producer(url, topic="other") as out:  # someone else's group on the bus
        await out.send(make_msg(0), flush=True)
    from mlops_async import Consumer

    async with Consumer(url, topic="other", group="not-ours", auto_offset_reset="earliest") as c:
        await c.get_messages(timeout=0.2)
    watch = Watch(url, [pipeline])
    try:
        for _ in range(3):
            await watch.snapshot()
    finally:
        await watch.close()
    assert sorted(calls) == ["uit.parse"] * 3 + ["uit.sink"] * 3
