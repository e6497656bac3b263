"""Finite runs: sources that end, and the end of the stream travelling downstream.

Every replica of a stage that ends announces it on the pipeline's control topic
(``<pipeline>.control``) with a :class:`StageEnded` record, after its outputs are
confirmed. A stage ends once every replica of every upstream stage has ended
and its own input is drained: its consumer group has nothing left to read or
acknowledge on the broker, and nothing is in flight in the app. It then
announces its own end, so the next stage can end in turn.

The control topic is separate from the data, so the end marker can never be
mistaken for data, and it is read by every replica (no consumer group), so it
works with any number of replicas and partitions, across processes and hosts.
Records carry the run id, so a later run with another id is not confused by an
earlier one's ends (``pipeline.run()`` makes a fresh id; processes started with
``mlops-async run --stage`` share ``MLOPS_RUN_ID``, which they must be given). A
stage whose every replica already ended in a run refuses to run it again
(:func:`refuse_a_finished_run`): it would take the earlier ends for this run's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..admin import Admin
from ..consumer import Consumer
from ..errors import BusError, ConfigurationError
from ..producer import Producer

__all__ = ["Ending", "StageEnded", "refuse_a_finished_run"]

log = logging.getLogger("mlops_async.app")


class StageEnded(msgspec.Struct, frozen=True, kw_only=True):
    """One replica of ``stage`` has finished everything it will ever do in ``run``."""

    run: str
    stage: str
    replica: str
    replicas: int


@dataclass
class Ending:
    """Where an app's stage sits in a finite run (set by :class:`~mlops_async.Pipeline`)."""

    control_topic: str
    run: str
    stage: str
    replica: str
    replicas: int
    #: Upstream stage -> how many replicas it runs.
    upstream: dict[str, int] = field(default_factory=dict)
    poll: float = 0.2
    #: The run id came from outside (``MLOPS_RUN_ID``), so it may name a run that
    #: already ended: checked at start (a fresh id of ``pipeline.run()`` cannot).
    given_id: bool = False

    def upstream_done(self, seen: dict[str, set[str]], announced: dict[str, int]) -> bool:
        return all(
            len(seen.get(stage, ())) >= announced.get(stage, replicas)
            for stage, replicas in self.upstream.items()
        )


async def announce(ending: Ending, url: str, client_options: dict[str, Any]) -> None:
    """Publish this replica's end and wait until the broker confirmed it."""
    async with Producer(url, topic=ending.control_topic, schema=StageEnded,
                        **client_options) as p:
        await p.send(StageEnded(run=ending.run, stage=ending.stage, replica=ending.replica,
                                replicas=ending.replicas))
        await p.flush(timeout=60)
    log.info("stage %s replica %s ended (run %s)", ending.stage, ending.replica, ending.run)


async def refuse_a_finished_run(ending: Ending, url: str, client_options: dict[str, Any]) -> None:
    """Raise :class:`ConfigurationError` if every replica of this stage already ended
    in this run: the run id was reused, and this stage would take that run's ends
    (its own and its upstream's) for this one's and end without reading anything."""
    ended: set[str] = set()
    async with Consumer(url, topic=ending.control_topic, schema=StageEnded,
                        auto_offset_reset="earliest", **client_options) as control:
        while notes := await control.get_messages(timeout=ending.poll * 5):
            ended |= {n.replica for n in notes if n.run == ending.run and n.stage == ending.stage}
    if len(ended) >= ending.replicas:
        raise ConfigurationError(
            f"run {ending.run!r} already ended for stage {ending.stage!r} ({len(ended)} of "
            f"{ending.replicas} replica(s) announced their end on {ending.control_topic}): a "
            "finished run is not run again. Start a new run with a new MLOPS_RUN_ID, the same "
            "for every stage of it")


async def wait_for_the_end(
    ending: Ending,
    url: str,
    client_options: dict[str, Any],
    *,
    group: str,
    inputs: list[tuple[str, str]],
    idle: Callable[[], bool],
) -> None:
    """Return once every upstream replica ended and ``inputs`` are drained for ``group``.

    ``inputs`` are (url, topic) pairs; ``idle()`` says nothing is in flight in the app.
    """
    seen: dict[str, set[str]] = {}
    announced: dict[str, int] = {}
    async with Consumer(url, topic=ending.control_topic, schema=StageEnded,
                        auto_offset_reset="earliest", **client_options) as control:
        while not ending.upstream_done(seen, announced):
            for note in await control.get_messages(timeout=ending.poll * 5):
                if note.run == ending.run and note.stage in ending.upstream:
                    seen.setdefault(note.stage, set()).add(note.replica)
                    announced[note.stage] = note.replicas
    admins: dict[str, Admin] = {}
    try:
        while True:
            if idle() and await _drained(admins, client_options, group, inputs):
                return
            await asyncio.sleep(ending.poll)
    finally:
        for admin in admins.values():
            await admin.close()


async def _drained(admins: dict[str, Admin], client_options: dict[str, Any], group: str,
                   inputs: list[tuple[str, str]]) -> bool:
    for url, topic in inputs:
        admin = admins.get(url)
        if admin is None:
            admin = admins[url] = Admin(url, **client_options)
            await admin.start()
        try:
            lag = await admin.group_lag(group)
        except BusError as exc:  # the broker is away: not drained yet
            log.debug("lag of %s: %s", topic, exc)
            return False
        mine = [p for p in lag if p.topic == topic]
        if not mine:
            # The group holds no position on it: drained only if there is nothing to read.
            topics = {t.name: t for t in await admin.list_topics()}
            info = topics.get(topic)
            if info is not None and (info.messages is None or info.messages > 0):
                return False
        elif sum(p.lag for p in mine) > 0:
            return False
    return True
