"""Per-message handlers are run in runs (Outcomes.handle_run): what must not change."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from mlops_async import DeadLetter, Reject
from mlops_async.app import outcome
from mlops_async.backends.memory import MemoryBackend
from mlops_async.codec import Codec

from .models import Alert, Feature, RawEvent
from .test_app import read, send, typed_app, wait_for


def bus() -> str:
    return f"memory://runs-{uuid.uuid4().hex[:8]}"


async def redelivered(url: str, expect: int = 0) -> list[int]:
    """The seqs the same group is handed again (what was never acknowledged)."""
    seen: list[int] = []
    app = typed_app(url)

    @app.handler(input="raw", outputs=[])
    async def again(e: RawEvent) -> None:
        seen.append(e.seq)

    async with app:
        await wait_for(lambda: len(seen) >= expect)
        await asyncio.sleep(0.3)
    return seen


async def test_keyless_inputs_still_run_concurrently() -> None:
    """Workers take runs of the waiting inputs, not all of them: max_concurrency holds."""
    url = bus()
    app = typed_app(url, max_concurrency=8)
    in_flight = peak = done = 0
    gate = asyncio.Event()

    @app.handler(input="raw", outputs=[])
    async def handler(e: RawEvent) -> None:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        if peak >= 8:
            gate.set()
        await asyncio.wait_for(gate.wait(), 10)
        in_flight -= 1
        done += 1

    async with app:
        await send(url, "raw", [RawEvent("a", 1, i) for i in range(64)])
        await wait_for(lambda: done == 64)
    assert peak == 8


async def test_a_failing_input_leaves_the_rest_of_its_run_alone() -> None:
    url = bus()
    app = typed_app(url)
    calls: dict[int, int] = {}

    @app.handler(input="raw", outputs=["features"], retries=1, backoff=0.01)
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        calls[e.seq] = calls.get(e.seq, 0) + 1
        if e.seq == 17:
            raise ValueError("poison")
        return [("features", Feature(e.user, e.value * 2, e.seq))]

    async with app:
        await send(url, "raw", [RawEvent("a", 1, i) for i in range(50)])
        out = await read(url, "features", Feature, 49)
        letters = await read(url, "raw.dlq", DeadLetter, 1)
    assert sorted(f.seq for f in out) == [i for i in range(50) if i != 17]
    assert calls[17] == 2  # the first attempt and one retry, counted as before
    assert all(n == 1 for seq, n in calls.items() if seq != 17)
    assert len(letters) == 1 and letters[0].error_type == "ValueError"
    assert letters[0].attempts == 2
    # Every input was acknowledged: the same group reads nothing more.
    assert await redelivered(url) == []


async def test_mixed_outcomes_in_one_run_are_all_published_and_acknowledged() -> None:
    """None, one output, two outputs, Ack and Reject side by side, one key (one run)."""
    url = bus()
    app = typed_app(url)

    @app.handler(input="raw", outputs=["features", "alerts"])
    async def handler(e: RawEvent) -> Any:
        kind = e.seq % 4
        if kind == 0:
            return None
        if kind == 1:
            return [("features", Feature(e.user, 1, e.seq))]
        if kind == 2:
            return [("features", Feature(e.user, 2, e.seq)), ("alerts", Alert(e.user, "x"))]
        if e.seq == 3:
            raise Reject("no")
        return [("features", {"user": e.user, "doubled": 3, "seq": e.seq})]  # a dict

    async with app:
        await send(url, "raw", [RawEvent("k", 1, i) for i in range(40)], key=lambda e: e.user)
        features = await read(url, "features", Feature, 29)
        alerts = await read(url, "alerts", Alert, 10)
        letters = await read(url, "raw.dlq", DeadLetter, 1)
    assert sorted(f.seq for f in features) == sorted(
        [i for i in range(40) if i % 4 in (1, 2)] + [i for i in range(40) if i % 4 == 3 and i != 3])
    assert len(alerts) == 10
    assert [d.error_type for d in letters] == ["Reject"]
    assert app._outcomes is not None
    assert app._outcomes.processed == 39 and app._outcomes.failed == 1


async def test_finished_inputs_are_acknowledged_while_a_slow_one_runs() -> None:
    """One key, one run: finished inputs are settled every RUN_SETTLE seconds, so those
    that finished well before a stuck one do not wait for it."""
    url = bus()
    app = typed_app(url)
    gate = asyncio.Event()

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        if e.seq == 10:
            await gate.wait()
        else:
            await asyncio.sleep(0.003)  # four of these outlast outcome.RUN_SETTLE
        return [("features", Feature(e.user, 1, e.seq))]

    assert outcome.RUN_SETTLE < 0.03
    async with app:
        await send(url, "raw", [RawEvent("k", 1, i) for i in range(11)], key=lambda e: e.user)
        assert app._outcomes is not None
        outcomes = app._outcomes
        # Settled before each call once RUN_SETTLE passed since the last settle: at
        # least inputs 0..6 of the ten before the stuck one.
        await wait_for(lambda: outcomes.processed >= 7)
        await asyncio.sleep(0.05)
        assert outcomes.processed < 11
        gate.set()
        await wait_for(lambda: outcomes.processed == 11)


async def test_a_refused_output_loses_no_input_of_its_run() -> None:
    """The broker refuses a batch holding one run's outputs: each input of the run is
    either published or dead-lettered with the reason, none is acknowledged unseen."""
    url = bus()
    app = typed_app(url)

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        return [("features", Feature("refuse-me" if e.seq == 5 else e.user, 1, e.seq))]

    codec: Codec[Feature] = Codec(Feature)
    original = MemoryBackend.publish

    async def publish(self: MemoryBackend, records: Any) -> None:
        if any(r.topic == "features" and codec.decode(r.value).user == "refuse-me"
               for r in records):
            raise PermissionError("topic refuses this record")
        await original(self, records)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MemoryBackend, "publish", publish)
        async with app:
            await send(url, "raw", [RawEvent("k", 1, i) for i in range(12)],
                       key=lambda e: e.user)
            codec_in: Codec[RawEvent] = Codec(RawEvent)
            dead: set[int] = set()
            published: set[int] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(dead | published) < 12 and loop.time() < deadline:
                letters = await read(url, "raw.dlq", DeadLetter, 12, timeout=0.3)
                dead = {codec_in.decode(d.original).seq for d in letters}
                published = {f.seq for f in await read(url, "features", Feature, 12,
                                                      timeout=0.3)}
    assert 5 in dead and {d.error_type for d in letters} == {"PublishError"}
    assert dead | published == set(range(12))


async def test_bad_records_in_a_run_are_decoded_late_and_dealt_with_alone() -> None:
    """Workers decode each input when they reach it: garbage is dead-lettered with the
    reason, a null value (tombstone) is skipped, their neighbours are handled, all acked."""
    from mlops_async import Producer
    from mlops_async.backends import Record

    url = bus()
    app = typed_app(url)
    seen: list[int] = []

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        seen.append(e.seq)
        return [("features", Feature(e.user, 1, e.seq))]

    codec: Codec[RawEvent] = Codec(RawEvent)
    records = []
    for i in range(12):
        value: Any = codec.encode(RawEvent("k", 1, i))
        if i == 3:
            value = b"\x01\xc1 not msgpack"
        elif i == 7:
            value = None  # a tombstone
        records.append(Record("raw", value, b"k"))
    async with app:
        async with Producer(url, topic="raw") as p:
            assert p.backend is not None
            await p.backend.publish(records)
        out = await read(url, "features", Feature, 10)
        letters = await read(url, "raw.dlq", DeadLetter, 1)
        consumer = app._routes[0].consumer
        assert consumer is not None
        await wait_for(lambda: consumer.tombstones == 1)
    assert seen == [i for i in range(12) if i not in (3, 7)]  # one key: in order
    assert sorted(f.seq for f in out) == seen
    assert len(letters) == 1 and letters[0].original == b"\x01\xc1 not msgpack"
    assert letters[0].error_type == "DecodeError" and "raw[0]@3" in letters[0].error
    assert await redelivered(url) == []  # every input was acknowledged, bad ones included


async def test_a_run_cut_short_by_shutdown_acknowledges_what_it_finished() -> None:
    """Stop while a run's handler hangs: the inputs it finished are not redelivered."""
    url = bus()
    app = typed_app(url, drain_timeout=0.2)
    gate = asyncio.Event()

    @app.handler(input="raw", outputs=["features"])
    async def handler(e: RawEvent) -> list[tuple[str, Feature]]:
        if e.seq == 5:
            await gate.wait()  # never set: cancelled at the end of the drain
        return [("features", Feature(e.user, 1, e.seq))]

    await app.start()
    await send(url, "raw", [RawEvent("k", 1, i) for i in range(8)], key=lambda e: e.user)
    assert len(await read(url, "features", Feature, 5)) == 5
    await app.stop()
    assert app._outcomes is not None and app._outcomes.published == 5  # counted, too
    # The hung one and those after it come again, never 0..4.
    assert await redelivered(url, 3) == [5, 6, 7]
