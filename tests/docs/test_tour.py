"""docs_src/tour.py, the first example a newcomer runs, works as written on every broker."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

TOUR = Path(__file__).resolve().parents[2] / "docs_src" / "tour.py"


def _tour() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_tour", TOUR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["memory", "redis", "kafka"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://tour-test"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"kafka://{request.getfixturevalue('kafka_bootstrap')}"


async def test_the_tour_receives_what_it_sent(url: str, unique: Callable[[str], str]) -> None:
    async with asyncio.timeout(60):
        got = await _tour().main(url, topic=unique("train"), group=unique("trainers"))
    assert [m.user_message for m in got] == ["Hello World"] * 3
    assert got[0].additional_arguments == {"dataset": "s3://bucket/day=2026-11-21"}


def test_the_tour_runs_as_a_script() -> None:
    out = subprocess.run([sys.executable, str(TOUR)], capture_output=True, text=True,
                         timeout=60, env={"PATH": "", "MLOPS_BUS_PROBE": "0"}, check=True)
    assert out.stdout.count("Hello World") == 3, out.stdout + out.stderr
