"""The examples are programs users copy: they must run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize(("script", "args", "expect"), [
    ("dead_letters.py", [], "dead letter from events"),
    ("asyncio_worker.py", ["--demo"], "trained job-19"),
])
def test_example_runs(script: str, args: list[str], expect: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert expect in proc.stdout + proc.stderr
