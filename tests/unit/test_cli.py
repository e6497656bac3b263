from __future__ import annotations

import subprocess
import sys

import pytest

from mlops_async.cli import main
from mlops_async.demo import run_demo


async def test_demo_pipeline_runs_end_to_end() -> None:
    seen: list[str] = []
    result = await run_demo(
        "memory://demo-test", 2000, on_status=lambda m: seen.append(f"{m.stage}:{m.msg_type.value}")
    )
    assert result.stages["train"].messages == 2000
    assert result.accuracy > 0.8
    for expected in (
        "ETL:START",
        "ETL:COMPLETE",
        "TRAIN:START",
        "TRAIN:PROGRESS",
        "TRAIN:COMPLETE",
        "EVALUATE:START",
        "EVALUATE:COMPLETE",
    ):
        assert expected in seen


def test_cli_demo_plain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--plain", "--records", "500"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "msg/s" in out


def test_python_dash_m_runs_the_rich_demo() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_async", "demo", "--records", "300"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipeline summary" in proc.stdout


def test_topics_and_groups_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "--url", "memory://cli"]) == 0
    assert main(["groups", "--url", "memory://cli"]) == 0
