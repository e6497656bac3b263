"""What the page shows, once a second: the graph with live figures, from what the bus already has.

:class:`Watch` is the one poller behind every open page. It polls only while
someone listens (nobody watching costs the brokers nothing), at most once per
``interval`` however many pages are open; each poll is one ``list_topics`` and
one ``describe_groups`` (every group's lag in one query) through ``top``'s
:class:`~mlops_async.top.TopView`, plus reading the heartbeats and dead letters
that arrived since the last poll. :func:`compose` turns that into the page's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec

from ..app.heartbeat import LIVE_STATES, ReplicaStats, replica_state
from ..codec import JSON_V1, MSGPACK_V1
from ..deadletter import DeadLetter
from ..endpoint import redact
from ..errors import BusError
from ..top import QueueRow, TopView
from .graph import Graph, graph_of, layout

__all__ = ["Watch", "compose", "decode_original", "letter_view"]

log = logging.getLogger("mlops_async.ui")

#: The replay's consumer group (``mlops-async dlq replay`` uses the same): its position on a
#: dead-letter topic marks what was replayed, whichever tool did it.
REPLAY_GROUP = "mlops-dlq-replay"

#: Seconds over which a queue's backlog must have grown to be shown as growing.
GROWTH_WINDOW = 5.0


def _num(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _replicas_of(beats: Iterable[ReplicaStats]) -> dict[str, list[ReplicaStats]]:
    """App name -> the beats of its replicas in its latest run (all, outside runs)."""
    by_app: dict[str, list[ReplicaStats]] = {}
    for b in beats:
        by_app.setdefault(b.app, []).append(b)
    for app, bs in by_app.items():
        latest = max(bs, key=lambda b: b.at)
        if latest.run:  # a finite run: the replicas of earlier runs are history
            by_app[app] = [b for b in bs if b.run == latest.run or not b.run]
    return by_app


def _stage_state(states: list[str]) -> str:
    if not states:
        return "absent"
    if all(s == "ended" for s in states):
        return "ended"
    for s in ("silent", "draining", "running", "idle", "ended"):
        if s in states:
            return s
    return "stopped"


def compose(graph: Graph, rows: Sequence[QueueRow], beats: Iterable[ReplicaStats], *,
            now: float, growing: Collection[str] = (),
            silent_after: float = 3.0, url: str = "") -> dict[str, Any]:
    """The page's JSON: nodes with their place, edges, and each stage's and queue's figures."""
    by_topic = {r.topic: r for r in rows}
    by_app = _replicas_of(beats)
    place = layout(graph.nodes(), graph.edges())
    stages: dict[str, Any] = {}
    for s in graph.stages.values():
        reps = sorted(by_app.get(s.app, []), key=lambda b: (b.host, b.pid, b.replica))
        states = [replica_state(b, now, silent_after) for b in reps]
        live = [b for b, st in zip(reps, states, strict=True) if st in LIVE_STATES]
        processed = sum(b.processed for b in reps)
        backlog = sum(by_topic[t].lag or 0 for t in s.inputs if t in by_topic)
        run = next((b.run for b in reps if b.run), "")
        state = _stage_state(states)
        progress: float | None = None
        if run and s.inputs:
            total = processed + backlog
            progress = 1.0 if state == "ended" else (processed / total if total else 0.0)
        elif run:
            progress = 1.0 if state == "ended" else None
        stages[s.name] = {
            "id": f"s:{s.name}", "name": s.name, "app": s.app, "state": state,
            "inputs": s.inputs, "outputs": s.outputs, "declared_replicas": s.replicas,
            "in_rate": _num(sum(b.in_rate for b in live)),
            "out_rate": _num(sum(b.out_rate for b in live)),
            "processed": processed, "failed": sum(b.failed for b in reps),
            "published": sum(b.published for b in reps), "backlog": backlog,
            "run": run, "progress": None if progress is None else round(progress, 4),
            "last_error": next((b.last_error for b in reps if b.last_error), ""),
            "replicas": [{
                "id": b.replica, "host": b.host, "pid": b.pid, "state": st,
                "in_rate": _num(b.in_rate if st in LIVE_STATES else 0.0),
                "out_rate": _num(b.out_rate if st in LIVE_STATES else 0.0),
                "processed": b.processed, "failed": b.failed, "published": b.published,
                "last_error": b.last_error, "age": round(max(0.0, now - b.at), 1),
            } for b, st in zip(reps, states, strict=True)],
        }
    dlq_of = {t: d for s in graph.stages.values()
              for t, d in zip(s.inputs, s.dead_letters, strict=False)}
    queues: dict[str, Any] = {}
    for topic, name in graph.queues.items():
        r = by_topic.get(topic, QueueRow(topic))
        queues[topic] = {
            "id": f"q:{topic}", "name": name, "topic": topic,
            "written": r.written, "backlog": r.lag, "groups": r.groups,
            "in_rate": _num(r.in_rate), "out_rate": _num(r.out_rate),
            "dlq": dlq_of.get(topic, f"{topic}.dlq"), "dead_letters": r.dead_letters,
            "last_error": r.last_error, "growing": topic in growing,
        }
    return {
        "at": now, "url": redact(url), "declared": graph.declared,
        "nodes": [{"id": n, "col": c, "row": rw} for n, (c, rw) in place.items()],
        "edges": graph.edges(), "stages": stages, "queues": queues,
    }


def decode_original(data: bytes) -> Any:
    """What a dead letter's original bytes say, as JSON-able data, when they can be read:
    an mlops_async payload (msgpack or JSON envelope), bare JSON, else text or hex."""
    try:
        if data[:1] == bytes([MSGPACK_V1]):
            return _finite(msgspec.to_builtins(msgspec.msgpack.decode(data[1:]), enc_hook=repr))
        if data[:1] == bytes([JSON_V1]):
            return msgspec.json.decode(data[1:])
        if data[:1] in (b"{", b"["):
            return msgspec.json.decode(data)
    except (msgspec.DecodeError, TypeError, ValueError):
        pass
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"hex": data[:512].hex(" ")}


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: spelled as strings, since they may be why it failed."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def letter_view(x: DeadLetter) -> dict[str, Any]:
    """One dead letter for the page: why it failed, its headers and its decoded original."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (x.headers or [])}
    return {
        "source_topic": x.source_topic, "partition": x.partition, "offset": x.offset,
        "error_type": x.error_type, "error": x.error, "handler": x.handler,
        "attempts": x.attempts, "failed_at": x.failed_at,
        "key": None if x.key is None else x.key.decode("utf-8", "replace"),
        "headers": headers, "size": len(x.original), "null_value": x.null_value,
        "original": decode_original(x.original) if x.original else None,
        "fields": [[k.decode("utf-8", "replace"), v.decode("utf-8", "replace")]
                   for k, v in x.fields] if x.fields else None,
    }


class Watch:
    """The shared poller: one :class:`TopView`, polled only while pages listen."""

    def __init__(self, url: str, targets: Sequence[Any] = (), *,
                 client_options: dict[str, Any] | None = None, interval: float = 1.0,
                 silent_after: float = 3.0) -> None:
        self.url = url
        self.targets = list(targets)
        self.client_options = dict(client_options or {})
        self.interval = interval
        self.silent_after = silent_after
        self.polls = 0  # snapshots taken: what watching has cost the brokers
        self.latest: bytes | None = None
        self._view: TopView | None = None
        self._listeners: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one poll at a time, whoever asks
        self._lags: dict[str, deque[tuple[float, int]]] = {}

    async def snapshot(self) -> dict[str, Any]:
        """Poll the bus once and compose the page's JSON."""
        async with self._lock:
            if self._view is None:
                self._view = TopView(self.url, client_options=self.client_options)
            view = self._view
            beats = await view.read_heartbeats()
            graph = graph_of(self.targets, beats.values())
            # The lag of the pipeline's own groups only: one query per group per poll.
            rows = await view.snapshot(graph.groups())
            self.polls += 1
            now = time.time()
            growing = set()
            for r in rows:
                hist = self._lags.setdefault(r.topic, deque(maxlen=64))
                if r.lag is not None:
                    hist.append((now, r.lag))
                old = [lag for t, lag in hist if now - t >= GROWTH_WINDOW]
                if r.lag and old and r.lag > old[-1]:
                    growing.add(r.topic)
            return compose(graph, rows, beats.values(), now=now, growing=growing,
                           silent_after=self.silent_after, url=self.url)

    async def current(self) -> bytes:
        """The latest snapshot the poller took; without listeners, one taken now (and the
        clients it opened closed again: nobody watching costs nothing)."""
        if self.latest is not None:
            return self.latest
        try:
            return msgspec.json.encode(await self.snapshot())
        finally:
            if not self._listeners:
                await self._stop()

    def listen(self) -> asyncio.Queue[bytes]:
        """A queue of snapshots (the newest only: a slow page skips, never piles up);
        the first listener starts the poller."""
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._listeners.add(q)
        if self.latest is not None:
            q.put_nowait(self.latest)
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="mlops_async.ui.poll")
        return q

    async def leave(self, q: asyncio.Queue[bytes]) -> None:
        """Stop listening; the last listener to leave stops the poller and closes its clients."""
        self._listeners.discard(q)
        if not self._listeners:
            await self._stop()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._lock:
            view, self._view = self._view, None
            self.latest = None
            if view is not None:
                await view.close()

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                data = msgspec.json.encode(await self.snapshot())
            except BusError as exc:  # the broker is away: say so, keep trying
                data = json.dumps({"error": redact(str(exc)), "at": time.time()}).encode()
            except Exception as exc:  # a bug must show on the page and in the log, not freeze it
                log.exception("mlops-async ui: polling %s failed", redact(self.url))
                data = json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                   "at": time.time()}).encode()
            self.latest = data
            for q in list(self._listeners):
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()  # drop what a slow page has not taken yet
                q.put_nowait(data)
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def letters(self, dlq_topic: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest dead letters of ``dlq_topic``, newest first (as followed by the poller)."""
        kept = self._view.letters.get(dlq_topic, ()) if self._view is not None else ()
        return [letter_view(x) for x in reversed(list(kept)[-limit:])]

    async def waiting(self, dlq_topic: str) -> int:
        """Dead letters of ``dlq_topic`` not replayed yet (past the replay group's position)."""
        from ..admin import Admin

        if self._view is not None:  # a page is open: its Admin is
            return await self._waiting(self._view.admin, dlq_topic)
        async with Admin(self.url, **self.client_options) as admin:
            return await self._waiting(admin, dlq_topic)

    @staticmethod
    async def _waiting(admin: Any, dlq_topic: str) -> int:
        mine = [p for p in await admin.group_lag(REPLAY_GROUP) if p.topic == dlq_topic]
        if mine:
            return sum(p.lag for p in mine)
        info = {t.name: t for t in await admin.list_topics()}.get(dlq_topic)
        return (info.messages or 0) if info is not None else 0

    async def replay(self, dlq_topic: str, limit: int | None = None) -> int:
        """Replay ``dlq_topic`` to its sources (the existing replay: byte for byte, in order,
        each letter once across replays); returns how many records went back.

        "All" means the letters waiting now: a stage that still fails dead-letters
        them again, and those wait for the next replay instead of looping.
        """
        from ..app.replay import replay_dead_letters

        waiting = await self.waiting(dlq_topic)
        limit = waiting if limit is None else min(limit, waiting)
        if limit <= 0:
            return 0
        return await replay_dead_letters(self.url, dlq_topic, group=REPLAY_GROUP, limit=limit,
                                         timeout=0.5, **self.client_options)

    async def close(self) -> None:
        self._listeners.clear()
        await self._stop()
