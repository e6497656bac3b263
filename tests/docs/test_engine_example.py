"""The engine example of the docs (docs_src/engine) and its TestApp test, on memory and Redis."""

from __future__ import annotations

import pytest
from docs_src.engine.test_featurize import test_featurize as featurize_test


async def test_featurize_example_on_a_private_memory_bus() -> None:
    await featurize_test()


@pytest.mark.redis
async def test_featurize_example_against_redis(redis_url: str) -> None:
    await featurize_test(redis_url)
    await featurize_test(redis_url)  # again: a test's topics are its own on a real broker
