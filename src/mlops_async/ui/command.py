"""The ``mlops-async ui`` command: serve the page until interrupted."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

from ..endpoint import redact
from ..errors import ConfigurationError

__all__ = ["run_ui_command"]


async def _serve(url: str | None, targets: Sequence[str], *, host: str, port: int,
                 demo: bool, client_options: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def say(server: Any) -> None:
        print(f"mlops-async ui: {server.address} ({redact(url or 'memory://ui-demo')}); "
              f"Ctrl-C to stop", flush=True)

    try:
        if demo:
            from .demo import run_demo_ui

            task = asyncio.create_task(run_demo_ui(port, host, ready=say))
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            for t in (task, waiter):
                t.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            await asyncio.gather(task, return_exceptions=True)
            return
        from ..queues import import_object
        from .server import serve_ui

        assert url is not None
        server = await serve_ui(url, [import_object(t) for t in targets], host=host, port=port,
                                client_options=client_options)
        say(server)
        try:
            await stop.wait()
        finally:
            await server.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_ui_command(url: str | None, targets: Sequence[str], *, host: str, port: int,
                   demo: bool, client_options: dict[str, Any]) -> int:
    """Run ``mlops-async ui``; returns the exit code."""
    if not demo and not url:
        raise ConfigurationError(
            "ui needs a bus: --url redis://... (or kafka://...), MLOPS_BUS_URL, or --demo")
    if demo and targets:
        raise ConfigurationError("--demo shows its own pipeline: give no module with it")
    try:
        asyncio.run(_serve(url, targets, host=host, port=port, demo=demo,
                           client_options=client_options))
    except OSError as exc:
        raise ConfigurationError(f"cannot serve on {host}:{port}: {exc}") from exc
    return 0
