"""The stream engine: handlers that consume one queue and publish to many.

```python
app = App("feature_worker", url="kafka://localhost:9092")

@app.handler(input="raw_events", outputs=["features", "alerts"], dead_letter="raw_events.dlq")
async def featurize(event: RawEvent) -> list[tuple[str, msgspec.Struct]] | None:
    ...
```

For every input message: decode into the input queue's schema (failures go
straight to the dead-letter queue), call the handler (retried with
exponential backoff and jitter; see :mod:`mlops_async.signals` for explicit
outcomes), check every output against its queue's declaration and schema,
publish the outputs and wait until the broker confirmed them, and only then
acknowledge the input (at-least-once end to end). Up to ``max_concurrency``
messages are in flight per app; messages with the same key are handled one
after another, in order. Dead letters keep the original record whole.

Shutdown (``await app.stop()``, SIGINT or SIGTERM under :meth:`App.run`):
stop fetching, let in-flight messages finish within ``drain_timeout``,
flush producers, close. Anything unfinished stays unacknowledged and is
delivered again. A second signal exits at once.

The package, by concern: :mod:`.core` (declaration and life cycle),
:mod:`.dispatch` (pumps, worker pool, per-key order), :mod:`.outcome`
(retries, output checks, confirmation, acks, dead letters), :mod:`.lag`
(consumer lag for metrics), :mod:`.replay` (dead letters back to their source).
"""

from __future__ import annotations

from .core import App
from .dispatch import PUMP_MAX_RESTARTS
from .replay import replay_dead_letters
from .route import AppFailed, OutputError, Route

__all__ = ["PUMP_MAX_RESTARTS", "App", "AppFailed", "OutputError", "Route", "replay_dead_letters"]
