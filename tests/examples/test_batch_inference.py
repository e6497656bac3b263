"""examples/batch_inference: its own TestApp tests, on a private memory bus and on Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from examples.batch_inference.test_scoring import (
    test_a_malformed_transaction_is_dead_lettered_alone as malformed,
)
from examples.batch_inference.test_scoring import (
    test_every_transaction_is_scored_as_the_model_scores_it as scored,
)

ROOT = Path(__file__).resolve().parents[2]


async def test_the_pipeline_on_memory() -> None:
    await scored()
    await malformed()


@pytest.mark.redis
async def test_the_pipeline_on_redis(redis_url: str) -> None:
    await scored(redis_url)
    await malformed(redis_url)


@pytest.mark.slow
def test_the_cli_runs_the_pipeline_to_its_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_async", "run", "examples.batch_inference.scoring:pipeline",
         "--param", "count=300"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
