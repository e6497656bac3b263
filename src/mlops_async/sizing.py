"""Warnings when a stage runs more replicas than its input topic has partitions (Kafka).

Kafka gives each partition of a topic to one member of a consumer group, so
replicas beyond the input topic's partition count idle. Other brokers hand a
group's records to its members one by one and need no such check.

What is knowable where: offline (``mlops-async deploy k8s``) only the count a
queue declares (``options: {partitions: N}``); at run time (``Pipeline.run``)
the broker's own count, asked once with a short bound, else the declared one.
A topic that does not exist yet will be created with the broker's default
count (``num.partitions``, 1 unless configured), which is said too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .endpoint import resolve_url
from .errors import BusError, ConfigurationError
from .queues import Queue, declared_partitions, url_of

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["StageInput", "check_pipeline", "replica_warnings", "stage_inputs"]

log = logging.getLogger("mlops_async.sizing")

#: How long Pipeline.run waits for the broker's partition counts before going on.
ASK_TIMEOUT = 5.0
_DOCS = "see docs/kafka-partitions.md"


@dataclass(frozen=True, slots=True)
class StageInput:
    """A stage that runs several replicas and reads a topic on Kafka (or of unknown type)."""

    stage: str
    replicas: int
    queue: Queue
    url: str | None  # where the queue lives, if known
    kafka: bool  # known to be on Kafka (else: its type is unknown here)


def _is_kafka(scheme: str | None) -> bool:
    return scheme is not None and scheme.lower().split("+", 1)[0] == "kafka"


def _scheme(text: str | None) -> str | None:
    return text.split("://", 1)[0] if text and "://" in text else None


def stage_inputs(pipeline: Pipeline, bus: str | None, stages: Iterable[str] | None = None,
                 *, resolve: bool = False) -> list[StageInput]:
    """The stages of ``pipeline`` (or of ``stages``) with more than one replica whose input
    is on Kafka, or of unknown type but declaring a partition count.

    ``bus`` is the pipeline's bus URL, if known. ``resolve=True`` finds each queue's
    URL as the running app will (``MLOPS_QUEUE_<NAME>_URL`` and friends); otherwise
    from the queue's own ``url``/``type`` and ``bus`` only (offline).
    """
    out = []
    for name in stages or pipeline.stages:
        st = pipeline.stages[name]
        if st.input is None or st.replicas < 2:
            continue
        q = pipeline.queues.get(st.input) or Queue(name=st.input)
        if resolve:
            try:
                url = url_of(q, bus)
            except ConfigurationError:  # the app reports it when it opens the queue
                continue
            kafka = _is_kafka(_scheme(url))
        else:
            url = q.url or bus
            kind = _scheme(q.url) or q.type or _scheme(bus)
            kafka = _is_kafka(kind)
            if kind is not None and not kafka:
                continue
        if kafka or declared_partitions(q) is not None:
            out.append(StageInput(name, st.replicas, q, url, kafka))
    return out


def replica_warnings(inputs: Sequence[StageInput], counts: Mapping[str, int] | None = None,
                     ) -> list[str]:
    """One message per stage whose replicas exceed (or may exceed) its input's partitions.

    ``counts`` are the broker's partition counts by topic (``None``: offline, the broker
    was not asked); a topic missing from them does not exist yet. Without the broker's
    count the queue's declared one is used.
    """
    out = []
    for i in inputs:
        topic, r = i.queue.topic, i.replicas
        n = counts.get(topic) if counts is not None else None
        if n is None:
            n = declared_partitions(i.queue)
        if n is not None:
            if r > n:
                out.append(
                    f"stage {i.stage!r} runs {r} replicas but its input topic {topic!r} has "
                    f"{n} partition(s): Kafka gives each partition to one member of the group, "
                    f"so {r - n} replica(s) will idle; give the topic at least {r} partitions "
                    f"({_DOCS})")
        elif counts is not None:
            out.append(
                f"stage {i.stage!r} runs {r} replicas but its input topic {topic!r} does not "
                f"exist yet: the broker creates it on first use with its default partition "
                f"count (num.partitions, 1 unless configured), which would leave replicas idle; "
                f"create it with at least {r} partitions first ({_DOCS})")
        elif i.kafka:
            out.append(
                f"stage {i.stage!r} runs {r} replicas on Kafka topic {topic!r}, whose partition "
                f"count is unknown here (the broker was not asked): Kafka gives each partition "
                f"to one member of "
                f"the group, so the topic needs at least {r}; declare it on the queue "
                f"(options: {{partitions: N}}) to have it checked here ({_DOCS})")
    return out


async def _broker_counts(url: str, topics: Sequence[str],
                         client_options: Mapping[str, Any]) -> dict[str, int] | None:
    from .admin import Admin

    try:
        async with asyncio.timeout(ASK_TIMEOUT), Admin(url, **client_options) as admin:
            return await admin.partition_counts(topics)
    except (BusError, TimeoutError) as exc:
        log.debug("partition counts of %s: %r", topics, exc)
        return None


async def check_pipeline(pipeline: Pipeline, stages: Sequence[str]) -> list[str]:
    """Log (WARNING) and return a message for each stage of ``stages`` that runs more
    replicas than its Kafka input topic has partitions (see the module docstring)."""
    if not any(pipeline.stages[n].replicas > 1 and pipeline.stages[n].input for n in stages):
        return []  # nothing to check: no broker lookup, no URL probing
    bus = await resolve_url(pipeline.url)
    inputs = stage_inputs(pipeline, bus, stages, resolve=True)
    if not inputs:
        return []
    client_options = pipeline.app_options.get("client_options") or {}
    messages: list[str] = []
    by_url: dict[str, list[StageInput]] = {}
    for i in inputs:
        by_url.setdefault(i.url or bus, []).append(i)
    for url, group in by_url.items():
        counts = await _broker_counts(url, sorted({i.queue.topic for i in group}), client_options)
        messages += replica_warnings(group, counts)
    for m in messages:
        log.warning("%s", m)
    return messages
