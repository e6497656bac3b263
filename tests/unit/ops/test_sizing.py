"""Replicas beyond a Kafka input's partitions idle: deploy warns offline from the count a
queue declares; a partitioner is a Kafka option that the other brokers name as such."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mlops_async import ConfigurationError, MLOpsMessage, Pipeline, Producer, Queue
from mlops_async.backends import create_backend
from mlops_async.cli import main
from mlops_async.deploy import k8s_manifests
from mlops_async.queues import (
    consumer_options,
    declared_partitions,
    load_config,
    producer_options,
)
from mlops_async.sizing import replica_warnings, stage_inputs

TARGET = "tests.unit.ops.test_sizing:declared"


def slow_pipeline(bus: str, partitions: int | None, replicas: int = 4,
                  **queue: object) -> Pipeline:
    options = {} if partitions is None else {"partitions": partitions}
    p = Pipeline("sized", url=bus, queues=[Queue(name="jobs", options=options, **queue)])

    @p.stage(input="jobs", replicas=replicas)
    async def work(msg: MLOpsMessage) -> None: ...

    @p.stage(input="results")  # one replica: never more than its partitions
    async def collect(msg: MLOpsMessage) -> None: ...

    return p


declared = slow_pipeline("kafka://kafka:9092", partitions=2)


def warnings_of(p: Pipeline, **kw: object) -> list[str]:
    got: list[str] = []
    k8s_manifests(p, "x:p", warn=got.append, **kw)  # type: ignore[arg-type]
    return got


def test_deploy_warns_when_replicas_exceed_the_declared_partitions() -> None:
    (message,) = warnings_of(declared)
    assert "stage 'work' runs 4 replicas" in message
    assert "'jobs' has 2 partition(s)" in message and "2 replica(s) will idle" in message


def test_deploy_is_quiet_when_the_partitions_suffice() -> None:
    assert warnings_of(slow_pipeline("kafka://kafka:9092", partitions=4)) == []
    assert warnings_of(slow_pipeline("kafka+confluent://k:9092", partitions=8)) == []


def test_deploy_says_when_it_cannot_know_the_count() -> None:
    (message,) = warnings_of(slow_pipeline("kafka://kafka:9092", partitions=None))
    assert "partition count is unknown here" in message and "options: {partitions: N}" in message


def test_brokers_that_share_record_by_record_need_no_warning() -> None:
    assert warnings_of(slow_pipeline("redis://redis:6379/0", partitions=None)) == []
    # The queue's own type wins over the pipeline's URL.
    assert warnings_of(slow_pipeline("kafka://k:9092", partitions=None, type="redis",
                                     url="redis://r:6379/0")) == []
    kafka_queue = slow_pipeline("redis://r:6379/0", partitions=1, type="kafka",
                                url="kafka://k:9092")
    assert len(warnings_of(kafka_queue)) == 1


def test_a_url_from_a_secret_still_checks_declared_counts() -> None:
    p = slow_pipeline("", partitions=3)
    (message,) = warnings_of(p, url_secret="bus")
    assert "has 3 partition(s)" in message


def test_deploy_logs_a_warning_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlops_async.deploy"):
        k8s_manifests(declared, "x:p")
    assert "2 replica(s) will idle" in caplog.text


def test_the_command_prints_the_warning_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "k8s", TARGET]) == 0
    captured = capsys.readouterr()
    assert "mlops-async: warning: stage 'work' runs 4 replicas" in captured.err
    assert "warning" not in captured.out  # the manifests stay clean YAML


def test_the_broker_count_wins_over_the_declared_one() -> None:
    inputs = stage_inputs(declared, "kafka://kafka:9092")
    assert [i.stage for i in inputs] == ["work"]
    assert replica_warnings(inputs, {"jobs": 4}) == []
    (missing,) = replica_warnings(
        stage_inputs(slow_pipeline("kafka://k:9092", None), "kafka://k:9092"), {})
    assert "does not exist yet" in missing and "num.partitions" in missing


@pytest.mark.parametrize("bad", [0, -1, "4", True, 2.5])
def test_a_declared_partition_count_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="queue 'jobs': partitions"):
        declared_partitions(Queue(name="jobs", options={"partitions": bad}))


def test_queue_options_split_between_the_reader_and_the_writer() -> None:
    q = Queue(name="jobs", options={"partitioner": "round_robin", "partitions": 4,
                                    "max_poll_interval_ms": 600_000})
    assert consumer_options(q) == {"max_poll_interval_ms": 600_000}
    assert producer_options(q) == {"partitioner": "round_robin"}


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "postgresql://localhost/db"])
def test_brokers_without_partitions_refuse_a_partitioner_saying_why(url: str) -> None:
    with pytest.raises(ConfigurationError, match="partitioner \\(a Kafka option"):
        Producer(url, partitioner="round_robin")


async def test_the_in_memory_bus_drops_it_like_other_kafka_client_options() -> None:
    async with Producer("memory://sized", topic="t", partitioner="round_robin") as p:
        await p.send(MLOpsMessage(id="x", created_at=0.0, msg_type="DATA"))


def test_the_documented_queues_file_splits_its_options() -> None:
    path = Path(__file__).resolve().parents[3] / "docs_src" / "kafka" / "queues.yml"
    requests, vectors = load_config(path).queues
    assert declared_partitions(requests) == 4
    assert consumer_options(requests) == {"max_poll_interval_ms": 600_000}
    assert producer_options(vectors) == {"partitioner": "round_robin"}
    assert consumer_options(vectors) == {}


@pytest.mark.parametrize("scheme", ["kafka", "kafka+confluent"])
@pytest.mark.parametrize("value", ["sticky", "consistent_random", print, 3])
def test_both_kafka_backends_take_only_their_two_partitioners(scheme: str, value: object) -> None:
    for good in ("default", "round_robin"):
        create_backend(f"{scheme}://h:9092", partitioner=good)  # no connection yet
    with pytest.raises(ConfigurationError, match=r"'default' .* or 'round_robin'"):
        create_backend(f"{scheme}://h:9092", partitioner=value)
