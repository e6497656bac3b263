"""The FastAPI example's work per job, in-process and without HTTP, for instruction counts.

Runs N jobs of one app (``bus``: examples/fastapi_service, ``bare``: fastapi_bare_app)
the way bench_fastapi.py's requests start them (50 in flight), and nothing else, so
that a deterministic counter sees only that work. Instructions per job:

    for n in 100 400; do valgrind --tool=callgrind --callgrind-out-file=cg.$n \\
        python benchmarks/profile_fastapi_jobs.py bus $n; done
    # (Ir of cg.400 - Ir of cg.100) / 300

usage: python benchmarks/profile_fastapi_jobs.py bus|bare N
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def drive(create: Callable[[Any], Any], model: Any, pending: Callable[[], Any],
                jobs: int, concurrency: int = 50) -> None:
    left = jobs

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await create(model(dataset=f"s3://data/{left}", epochs=3))
            await asyncio.sleep(0.0005)  # the next request arrives a little later

    await asyncio.gather(*(client() for _ in range(concurrency)))
    while running := list(pending()):  # the jobs still running, until none is
        await asyncio.gather(*running, return_exceptions=True)
    await asyncio.sleep(0.05)  # their last reports reach the status board


async def main(app_name: str, n: int) -> None:
    os.environ.setdefault("MLOPS_BUS_URL", "memory://profile-fastapi-jobs")
    example = load(HERE.parent / "examples" / "fastapi_service" / "app.py", "example_app")
    if app_name == "bare":
        bare = load(HERE / "fastapi_bare_app.py", "bare_app")
        await drive(bare.create_job, bare.JobRequest, lambda: bare.jobs, n)
        return
    app = example.app
    async with app.router.lifespan_context(app):
        await drive(example.create_job, example.JobRequest, lambda: app.state.jobs, n)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
