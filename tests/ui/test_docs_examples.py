"""The code docs/ui.md shows runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_watching_a_pipeline_in_process_serves_the_page_and_ends_with_the_run() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs_src/ui/watch_in_process.py"), "--port", "0",
         "--records", "300"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "watch it at http://127.0.0.1:" in proc.stdout
