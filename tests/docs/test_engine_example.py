"""The engine example of the docs (docs_src/engine) and its TestApp test, on memory and Redis."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "docs_src" / "engine"


def featurize_test() -> Callable[[str | None], Awaitable[None]]:
    """The docs' test, imported as a user's test runner would: its folder on the path."""
    if str(ENGINE) not in sys.path:
        sys.path.insert(0, str(ENGINE))
    return importlib.import_module("test_featurize").test_featurize  # type: ignore[no-any-return]


async def test_featurize_example_on_a_private_memory_bus() -> None:
    await featurize_test()(None)


@pytest.mark.redis
async def test_featurize_example_against_redis(redis_url: str) -> None:
    await featurize_test()(redis_url)
    await featurize_test()(redis_url)  # again: a test's topics are its own on a real broker


def test_the_docs_test_runs_under_pytest_by_itself() -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "asyncio_mode=auto", str(ENGINE / "test_featurize.py")],
                          cwd=ENGINE, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
