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


def _cli(*args: str, cwd: str | None = None, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "mlops_async", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd,
                          env={**os.environ, "MLOPS_BUS_URL": "", **(env or {})})


def test_help_is_plain_text_and_every_command_is_described() -> None:
    top = _cli("--help").stdout
    assert "``" not in top and "Run, watch and document" in top
    for command in ("demo", "topics", "groups", "run", "top", "docs", "dlq"):
        out = _cli(command, "--help").stdout
        _, _, rest = out.partition("\n\n")
        assert rest.strip() and not rest.startswith("options"), command


def test_inspecting_commands_need_a_bus_and_say_so() -> None:
    for args in (["topics"], ["groups"], ["top"], ["dlq", "replay", "--queue", "x.dlq"]):
        proc = _cli(*args)
        assert proc.returncode == 2 and "needs a bus" in proc.stderr, args


def test_client_options_reach_the_backend_and_are_checked() -> None:
    proc = _cli("topics", "--url", "redis://127.0.0.1:1/0", "-o", "claim_timeout=1")
    assert proc.returncode == 2 and "claim_timeout" in proc.stderr


def test_run_finds_a_module_in_the_current_directory(tmp_path: pytest.TempPathFactory) -> None:
    import pathlib

    here = pathlib.Path(str(tmp_path))
    (here / "myworker.py").write_text(
        "from mlops_async import App\n"
        "app = App('w', url='broken-scheme://x')\n"
        "@app.handler(input='a')\n"
        "async def h(m): return None\n"
    )
    proc = _cli("run", "myworker:app", cwd=str(here))
    # It imported the module (and then met the bad scheme): not "No module named".
    assert "No module named" not in proc.stderr and "broken-scheme" in proc.stderr


def test_top_without_rich_names_the_extra() -> None:
    code = ("import sys; sys.modules['rich'] = None; sys.modules['rich.live'] = None\n"
            "import asyncio\nfrom mlops_async.top import run_top\n"
            "try:\n    asyncio.run(run_top('memory://x'))\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    assert "MissingDependency" in out and "mlops-async[cli]" in out
