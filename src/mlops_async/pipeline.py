"""Pipelines: stages wired by queue names, typed parameters, replicas.

```python
class TrainParams(msgspec.Struct):
    model_dir: str                 # required
    lr: float = 0.01               # optional, with a default

pipeline = Pipeline("churn", url="kafka://localhost:9092")

@pipeline.stage(input="features", outputs=["models"], params=TrainParams, replicas=2)
async def train(msg: MLOpsMessage, params: TrainParams) -> list[tuple[str, Any]] | None: ...
```

``await pipeline.run()`` runs every stage in this process (each replica is
a member of the stage's consumer group), for development;
``mlops-async run module:pipeline --stage train --replicas 4`` runs one
stage as 4 processes for production: the broker's consumer groups spread
the work, so replicas can also run on other hosts.

Parameters are a msgspec Struct per stage, set (later wins) from the
pipeline config (``params: {stage: {name: value}}``), the environment
(``MLOPS_PARAM_<STAGE>_<NAME>``) and the command line (``--param name=value``);
a missing required parameter is an error that names it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .app import App
from .app.core import ErrorHook
from .app.ending import Ending
from .errors import ConfigurationError
from .queues import Queue
from .sizing import check_pipeline

__all__ = ["Pipeline", "Stage"]


@dataclass
class Stage:
    """One step of a pipeline: a handler, its queues, parameters and replica count."""

    name: str
    fn: Callable[..., Any]
    input: str | None  # None: a source
    outputs: tuple[str, ...]
    params_type: type[Any] | None
    replicas: int
    handler_options: dict[str, Any] = field(default_factory=dict)


def _env(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


class Pipeline:
    """A set of stages sharing a bus URL and queue declarations."""

    def __init__(self, name: str, *, url: str | None = None, queues: Sequence[Queue] = (),
                 params: dict[str, dict[str, Any]] | None = None,
                 app_options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.url = url
        self.queues = {q.name: q for q in queues}
        self.config_params = params or {}
        self.app_options = app_options or {}
        self.stages: dict[str, Stage] = {}
        self._hooks: dict[str, list[Callable[..., Any]]] = {
            "startup": [], "shutdown": [], "error": []}

    def queue(self, name: str, **fields: Any) -> Queue:
        q = Queue(name=name, **fields)
        self.queues[name] = q
        return q

    def stage(self, *, input: str | None = None, outputs: Sequence[str] = (),
              params: type[Any] | None = None, replicas: int = 1, name: str | None = None,
              **handler_options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a stage; ``handler_options`` go to :meth:`App.handler` (retries...).

        With no ``input`` the stage is a source: an async generator (or coroutine)
        yielding ``(queue, message)`` tuples, called with its parameters if it takes
        them. A pipeline with sources is finite: once they finished, every stage
        ends when its upstream stages ended and its input is drained, and
        ``run()`` returns.
        """
        if input is None and handler_options:
            raise ConfigurationError(f"a source stage takes no handler options: "
                                     f"{sorted(handler_options)}")
        if params is not None and not (isinstance(params, type)
                                       and issubclass(params, msgspec.Struct)):
            raise ConfigurationError("params must be a msgspec.Struct type")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            stage_name = name or fn.__name__
            if stage_name in self.stages:
                raise ConfigurationError(f"stage {stage_name!r} is declared twice")
            self.stages[stage_name] = Stage(stage_name, fn, input, tuple(outputs), params,
                                            max(1, replicas), handler_options)
            return fn

        return register

    # -- parameters -----------------------------------------------------------

    def params_for(self, stage: str, overrides: dict[str, str] | None = None) -> Any:
        """The stage's typed parameters from config, then env, then ``overrides`` (CLI)."""
        st = self._stage(stage)
        if st.params_type is None:
            return None
        raw: dict[str, Any] = dict(self.config_params.get(stage, {}))
        prefix = f"MLOPS_PARAM_{_env(stage)}_"
        fields = set(st.params_type.__struct_fields__)
        for key, value in os.environ.items():
            if key.startswith(prefix):
                match = [f for f in fields if _env(f) == key[len(prefix):]]
                if match:
                    raw[match[0]] = value  # strings: converted below (lax mode)
        for key, value in (overrides or {}).items():
            if key not in fields:
                raise ConfigurationError(
                    f"stage {stage!r} has no parameter {key!r} (it has: {sorted(fields)})")
            raw[key] = value
        try:
            return msgspec.convert(raw, st.params_type, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"parameters of stage {stage!r}: {exc}") from None

    def _stage(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise ConfigurationError(
                f"pipeline {self.name!r} has no stage {name!r} (stages: {list(self.stages)})"
            ) from None

    # -- life cycle hooks (for every stage) -----------------------------------

    def on_startup(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``fn()`` in every stage replica before its first message."""
        self._hooks["startup"].append(fn)
        return fn

    def on_shutdown(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``fn()`` in every stage replica after its drain (also on SIGTERM)."""
        self._hooks["shutdown"].append(fn)
        return fn

    def on_error(self, fn: ErrorHook) -> ErrorHook:
        """Call ``fn(exc, input)`` when a stage's handler fails for good on an input."""
        self._hooks["error"].append(fn)
        return fn

    @property
    def finite(self) -> bool:
        """True if the pipeline has a source stage, so its runs end."""
        return any(st.input is None for st in self.stages.values())

    def upstream(self, stage: str) -> dict[str, int]:
        """The stages whose outputs feed ``stage``, with their replica counts."""
        st = self._stage(stage)
        return {s.name: s.replicas for s in self.stages.values()
                if st.input is not None and st.input in s.outputs}

    def ending(self, stage: str, run: str, replica: str, replicas: int | None = None) -> Ending:
        """Where ``stage`` sits in finite run ``run`` (for :attr:`App.ending`)."""
        st = self._stage(stage)
        return Ending(control_topic=f"{self.name}.control", run=run, stage=stage,
                      replica=replica, replicas=replicas or st.replicas,
                      upstream=self.upstream(stage))

    # -- running --------------------------------------------------------------

    def app_for(self, stage: str, params: Any = None, **app_options: Any) -> App:
        """One replica of ``stage`` as an :class:`App` (group ``<pipeline>.<stage>``)."""
        st = self._stage(stage)
        app = App(f"{self.name}.{st.name}", url=self.url, queues=self.queues.values(),
                  **{**self.app_options, **app_options})
        for fn_ in self._hooks["startup"]:
            app.on_startup(fn_)
        for fn_ in self._hooks["shutdown"]:
            app.on_shutdown(fn_)
        for fn_ in self._hooks["error"]:
            app.on_error(fn_)
        fn = st.fn
        if st.input is None:
            bound_params = params if params is not None else self.params_for(stage)
            takes = len(inspect.signature(fn).parameters)

            def produce() -> Any:
                return fn(bound_params) if takes >= 1 else fn()

            produce.__name__ = st.name
            app.source(outputs=st.outputs, name=st.name)(produce)
            return app
        handler: Callable[..., Any] = fn
        if st.params_type is not None and len(inspect.signature(fn).parameters) >= 2:
            bound = params if params is not None else self.params_for(stage)
            if inspect.iscoroutinefunction(fn):
                async def call(msg: Any) -> Any:
                    return await fn(msg, bound)
            else:
                def call(msg: Any) -> Any:  # type: ignore[misc]
                    return fn(msg, bound)
            # The handler's annotations (its input schema) show through the wrapper.
            handler = functools.update_wrapper(call, fn)
            handler.__name__ = st.name
        app.handler(input=st.input, outputs=st.outputs, name=st.name,
                    **st.handler_options)(handler)
        return app

    async def run(self, stages: Sequence[str] | None = None, *,
                  install_signals: bool = True) -> None:
        """Run stages (all by default), each with its replicas, in this process.

        A finite pipeline (one with sources) returns once every stage ended; any
        pipeline returns when stopped or signalled. Raises :class:`AppFailed` if a
        stage failed.
        """
        names = list(stages or self.stages)
        for n in names:
            self._stage(n)
        await check_pipeline(self, names)  # warns of replicas that Kafka would leave idle
        run_id = uuid.uuid4().hex
        apps = []
        for n in names:
            for i in range(self._stage(n).replicas):
                app = self.app_for(n)
                if self.finite:
                    app.ending = self.ending(n, run_id, f"{n}-{i}")
                apps.append(app)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        self._stop = stop
        waiters: list[asyncio.Task[Any]] = []
        try:
            for app in apps:
                await app.start()
            # Until asked to stop, until a stage fails, or until every stage ended.
            stopped = [asyncio.create_task(app.wait_stopped()) for app in apps]
            waiters = [asyncio.create_task(stop.wait()), *stopped]
            while not stop.is_set():
                await asyncio.wait([w for w in waiters if not w.done()] or waiters,
                                   return_when=asyncio.FIRST_COMPLETED)
                if all(t.done() for t in stopped) or any(a.failure for a in apps):
                    break
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await asyncio.gather(*(app.stop() for app in apps), return_exceptions=True)
        failed = [app.failure for app in apps if app.failure is not None]
        if failed:
            raise failed[0]

    def stop(self) -> None:
        """Ask a running :meth:`run` to drain and return."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def run_replicas(target: str, stage: str, replicas: int,
                 child_args: Sequence[Sequence[str]]) -> int:
    """Run ``replicas`` processes of one stage; forward SIGINT/SIGTERM; exit when all did.

    Each learns how many replicas its stage runs (``MLOPS_REPLICAS``), so the stages
    downstream of a finite run know how many ends to wait for.
    """
    env = {**os.environ, "MLOPS_REPLICAS": str(replicas)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "mlops_async", "run", target, "--stage", stage,
                          *child_args[i]], env=env)
        for i in range(replicas)
    ]

    def forward(sig: int, _frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return max(codes, key=abs) if codes else 0
