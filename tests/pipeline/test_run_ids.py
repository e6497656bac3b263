"""A finite run never reads an earlier run's end markers as its own.

Stages started as separate processes share a run id (``MLOPS_RUN_ID``). Without
one, every run used the id "default": a second run's reader saw the first run's
ends, read nothing and exited 0. Now a stage of a finite pipeline refuses to
start without a run id, and a stage whose every replica already ended in that
run refuses to run it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .test_finite import ROOT, read_ids


def _env(tmp_path: Path, url: str, run: str | None) -> dict[str, str]:
    env = {**os.environ, "FINITE_URL": url, "FINITE_OUT": str(tmp_path / "read.txt"),
           "FINITE_N": "20", "FINITE_PREFIX": f"fin-{uuid.uuid4().hex[:8]}", "MLOPS_BUS_URL": ""}
    env.pop("MLOPS_RUN_ID", None)
    if run is not None:
        env["MLOPS_RUN_ID"] = run
    return env


def _stage(env: dict[str, str], stage: str, err: Path) -> subprocess.Popen[bytes]:
    extra = ["--replicas", "2"] if stage == "double" else []  # as the pipeline declares
    with err.open("wb") as f:  # a file, not a pipe: a chatty child never blocks on it
        return subprocess.Popen([sys.executable, "-m", "mlops_async", "run",
                                 "tests.pipeline_finite:pipeline", "--stage", stage, *extra],
                                cwd=ROOT, env=env, stderr=f)


def _wait(procs: list[subprocess.Popen[bytes]], errs: list[Path]) -> list[tuple[int, str]]:
    try:
        return [(p.wait(60), e.read_text()) for p, e in zip(procs, errs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _run_all(env: dict[str, str], tmp_path: Path) -> list[tuple[int, str]]:
    stages = ("reader", "double", "writer")
    errs = [tmp_path / f"{s}-{uuid.uuid4().hex[:4]}.err" for s in stages]
    return _wait([_stage(env, s, e) for s, e in zip(stages, errs, strict=True)], errs)


@pytest.mark.redis
def test_a_stage_without_a_run_id_is_refused(tmp_path: Path, redis_url: str) -> None:
    err_path = tmp_path / "reader.err"
    [(code, err)] = _wait([_stage(_env(tmp_path, redis_url, None), "reader", err_path)],
                          [err_path])
    assert code == 2, err
    assert "MLOPS_RUN_ID" in err


@pytest.mark.redis
def test_a_run_id_that_already_ended_is_refused(tmp_path: Path, redis_url: str) -> None:
    env = _env(tmp_path, redis_url, uuid.uuid4().hex)
    assert [code for code, _ in _run_all(env, tmp_path)] == [0, 0, 0]
    assert read_ids(tmp_path) == list(range(20))

    again = _run_all(env, tmp_path)  # the same run id: refused, never a silent "saw 0"
    assert all(code == 2 for code, _ in again), again
    assert all("already ended" in err for _, err in again), again
