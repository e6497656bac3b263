"""Every code example on the site is a file under docs_src/ that runs here (memory://)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlops_async import DeadLetter, MessageType

from ._load import DOCS_SRC, load


def bus(prefix: str) -> str:
    return f"memory://{prefix}-{uuid.uuid4().hex[:8]}"


def test_readme_example_runs_as_a_script() -> None:
    proc = subprocess.run([sys.executable, str(DOCS_SRC / "readme_example.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train START {'dataset': 's3://bucket/day=2026-11-21'}" in proc.stdout


async def test_tour_sends_three_and_reads_them_back() -> None:
    got = await load("getting_started/tour.py").tour(bus("tour"))
    assert [m.user_message for m in got] == ["Hello World"] * 3
    assert {m.topic for m in got} == {"train"}  # the default topic


async def test_messages_build_derive_and_own_schema() -> None:
    mod = load("concepts/messages.py")
    assert mod.retry.msg_type is MessageType.START
    prediction = await mod.own_schema(bus("schema"))
    assert prediction == mod.Prediction("churn-v3", "user-42", 0.87)


async def test_batches_hand_out_every_message() -> None:
    assert await load("concepts/batches.py").batches(bus("batches")) == 1000


async def test_dead_letter_reader_reads_junk_and_oversize_letters() -> None:
    letters = await load("concepts/dead_letters.py").dead_letters(bus("dlq"))
    assert [type(x) for x in letters] == [DeadLetter, DeadLetter]
    by_type = {x.error_type: x for x in letters}
    assert set(by_type) == {"DecodeError", "MessageTooLarge"}
    assert len(by_type["MessageTooLarge"].original) == 2_000_001


async def test_engine_example_outputs_filters_and_dead_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's engine example as it is, with the queues.yml it names, on a memory bus.
    (tmp_path / "queues.yml").write_text("queues: []\n")
    monkeypatch.chdir(tmp_path)
    mod = load("engine/feature_worker.py")
    url = bus("features")
    mod.app.url = url
    features, letters = await load("engine/run_by_hand.py").run_once(
        mod.app, url, mod.RawEvent, mod.Feature)
    assert features == [mod.Feature("u1", 3.0)]
    assert [x.error for x in letters] == ["negative value"]


async def test_batch_handler_scores_every_row() -> None:
    scores = await load("engine/batch_handler.py").run_once("memory://scores", n=300)
    assert sorted(int(s.id) for s in scores) == list(range(300))


async def test_finite_pipeline_runs_to_its_end() -> None:
    assert await load("pipelines/finite.py").main() == list(range(100))


async def test_task_status_reports_start_progress_complete() -> None:
    reports = await load("operations/status.py").report(bus("status"))
    assert [r.msg_type for r in reports] == [
        MessageType.START, MessageType.PROGRESS, MessageType.COMPLETE]
    assert reports[-1].additional_arguments["accuracy"] == 0.94


async def test_health_probes_answer_while_running() -> None:
    assert await load("operations/health.py").probe() == (True, True)


async def test_tracing_links_producer_and_consumer_spans() -> None:
    mod = load("operations/tracing.py")
    try:
        names = await mod.traced(bus("traced"))
    finally:
        from mlops_async import tracing
        tracing.use(None)
    assert names == ["train publish", "train process"]


async def test_numpy_embedding_round_trip() -> None:
    got = await load("ml_payloads/embeddings.py").embeddings(bus("emb"))
    assert got.doc_id == "doc-1" and got.vector.shape == (768,)


async def test_custom_backend_is_used_by_its_scheme() -> None:
    counts = await load("brokers/custom_backend.py").use_it(f"counting://{uuid.uuid4().hex}")
    assert counts["jobs"] >= 1
