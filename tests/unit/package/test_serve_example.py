"""The FastAPI example runs as its docstring says, under uvicorn (the ``serve`` extra)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from ...brokers import free_port

ROOT = Path(__file__).resolve().parents[3]


def test_the_serve_extra_installs_what_the_example_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    names = {d.split(">")[0].split("[")[0].strip() for d in extras["serve"]}
    assert {"fastapi", "uvicorn"} <= names


def _call(port: int, method: str, path: str, body: dict[str, object] | None = None
          ) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_fastapi_example_serves_jobs_under_uvicorn(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=ROOT / "examples" / "fastapi_service", stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLOPS_BUS_URL": "memory://serve-example"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _call(port, "GET", "/jobs/none")
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "uvicorn.log").read_text()
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)
        code, job = _call(port, "POST", "/jobs", {"dataset": "s3://bucket/x", "epochs": 2})
        assert code == 202, job
        job_id = next(v for k, v in job.items() if "id" in k)
        for _ in range(100):
            code, status = _call(port, "GET", f"/jobs/{job_id}")
            if code == 200 and "COMPLETE" in json.dumps(status):
                break
            time.sleep(0.1)
        assert "COMPLETE" in json.dumps(status), status
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
