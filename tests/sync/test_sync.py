"""The blocking facade keeps the clients' guarantees on memory, Kafka and Redis:
send/flush/close, at-least-once, Ctrl-C, from plain threads and inside a running loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops_async import MessageType, MLOpsMessage
from mlops_async.sync import Consumer, Producer, task

from ..brokers import free_port
from ..conftest import make_msg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("kafka", marks=pytest.mark.kafka),
])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://sync-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"


def group_options(url: str) -> dict[str, int]:
    """Kafka: a member that left is replaced quickly (the test broker's defaults are long)."""
    if not url.startswith("kafka"):
        return {}
    return {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300,
            "rebalance_timeout_ms": 3000}


def read(url: str, topic: str, n: int, group: str | None = None,
         timeout_polls: int = 120) -> list[MLOpsMessage]:
    out: list[MLOpsMessage] = []
    with Consumer(url, topic=topic, group=group or f"r-{uuid.uuid4().hex[:6]}",
                  auto_offset_reset="earliest", **group_options(url)) as c:
        for _ in range(timeout_polls):
            out += c.get_messages(timeout=0.5)
            if len(out) >= n:
                break
    return out


def numbers(msgs: list[MLOpsMessage]) -> list[int]:
    return sorted(int(m.additional_arguments["i"]) for m in msgs)


def test_send_flush_close(url: str, unique: Callable[[str], str]) -> None:
    topic = unique("sync")
    with Producer(url, topic=topic) as p:
        for i in range(50):
            p.send(make_msg(i))
        p.flush()
        assert p.stats()["buffered"] == 0
        p.send_many([make_msg(i) for i in range(50, 60)])
    assert p.closed
    p.close()  # safe twice
    # close() delivered the last ten without a flush.
    assert numbers(read(url, topic, 60)) == list(range(60))


def test_a_message_not_finished_is_delivered_again(url: str, unique: Callable[[str], str]) -> None:
    topic, group = unique("alo"), unique("g")
    with Producer(url, topic=topic) as p:
        p.send(make_msg(1), flush=True)
    with pytest.raises(RuntimeError, match="crashed"), Consumer(
            url, topic=topic, group=group, auto_offset_reset="earliest",
            **group_options(url)) as c:
        first = next(c)
        raise RuntimeError("crashed while handling it")
    assert first.additional_arguments["i"] == 1
    # The next member of the group gets it again; once finished, it is acknowledged.
    assert numbers(read(url, topic, 1, group=group)) == [1]
    with Producer(url, topic=topic) as p:
        p.send(make_msg(2), flush=True)
    assert numbers(read(url, topic, 1, group=group)) == [2], "the first was acknowledged"


def test_from_plain_threads(url: str, unique: Callable[[str], str]) -> None:
    topic = unique("threads")
    errors: list[BaseException] = []
    with Producer(url, topic=topic) as p:
        def send_share(k: int) -> None:
            try:
                for i in range(k * 50, k * 50 + 50):
                    p.send(make_msg(i))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send_share, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush()
    assert errors == []
    got: list[MLOpsMessage] = []
    reader = threading.Thread(target=lambda: got.extend(read(url, topic, 200)))
    reader.start()
    reader.join()
    assert numbers(got) == list(range(200))


async def test_inside_a_running_event_loop(url: str, unique: Callable[[str], str]) -> None:
    # A notebook cell: this thread's loop is running; the facade's own loop does the work.
    asyncio.get_running_loop()
    topic = unique("loop")
    with Producer(url, topic=topic) as p:
        p.send(make_msg(7), flush=True)
    with task("run-1", url, topic=f"{topic}.status", creator="trainer") as t:
        t.progress(50, "half way", loss=0.5)
        t.result(accuracy=0.9)
    assert numbers(read(url, topic, 1)) == [7]
    kinds = [m.msg_type for m in read(url, f"{topic}.status", 3)]
    assert kinds == [MessageType.START, MessageType.PROGRESS, MessageType.COMPLETE]


def test_a_failed_task_reports_failure_and_raises(url: str, unique: Callable[[str], str]) -> None:
    topic = unique("status")
    with Producer(url, topic=topic) as p:
        with pytest.raises(ValueError, match="diverged"), p.task("run-2", topic=topic) as t:
            t.progress(10)
            raise ValueError("loss diverged")
    statuses = read(url, topic, 3)
    assert [m.msg_type for m in statuses][-1] == MessageType.FAILURE
    assert statuses[-1].additional_arguments["error"] == "loss diverged"


def interrupt(url: str, topic: str, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "tests.sync.interrupted", url, topic, mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    # Blocked in next() by now, or about to be: either way Ctrl-C must interrupt it.
    threading.Event().wait(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_in_a_blocking_call_interrupts_it_cleanly(url: str,
                                                         unique: Callable[[str], str]) -> None:
    done = interrupt(url, unique("ctrlc"), "caught")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["interrupted", "read", "100"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("url", [pytest.param("redis", marks=pytest.mark.redis),
                                 pytest.param("kafka", marks=pytest.mark.kafka)],
                         indirect=True)
def test_ctrl_c_that_ends_the_script_still_delivers_what_was_queued(
        url: str, unique: Callable[[str], str]) -> None:
    topic = unique("exit")
    done = interrupt(url, topic, "uncaught")
    assert done.returncode == -signal.SIGINT, done.stderr[-3000:]
    assert "KeyboardInterrupt" in done.stderr
    assert numbers(read(url, topic, 100)) == list(range(100))


@pytest.mark.slow
def test_ctrl_c_in_a_send_blocked_by_a_full_buffer_loses_nothing_silently() -> None:
    # The broker is away: the bounded buffer fills and send() blocks (backpressure).
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "tests.sync.interrupted", url, "t", "full"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert child.stdout.readline().strip() == "sent 1"
    threading.Event().wait(1.0)  # it blocks once the buffer is full, however long we wait
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    sent = 1 + out.count("sent ")
    assert child.returncode == -signal.SIGINT, err[-3000:]
    assert sent < 1000, "send() blocked on the full buffer"
    # What was queued and could not be delivered is counted at exit, never dropped silently.
    assert f"producer closed with {sent} message(s) undelivered" in err, err[-3000:]
