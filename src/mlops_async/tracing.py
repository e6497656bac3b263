"""Traces across stages with OpenTelemetry (the ``otel`` extra), free when off.

What it does when on:

* ``Producer.send`` opens a PRODUCER span ``"<topic> publish"`` per message and
  writes the current trace context into the record's headers (W3C
  ``traceparent``/``tracestate``, or whatever propagator the application set
  globally); headers of those names passed by the caller are replaced, so a
  dead letter or a forwarded message carries the context it was sent in.
  ``send_many`` opens one span for the whole call and gives every message of it
  the same context (one span per message would cost more than the batching saves).
* ``async for msg in consumer`` opens a CONSUMER span ``"<topic> process"`` per
  message, child of the context found in its headers (any producer's, ours or
  not), with the messaging attributes (``messaging.system``,
  ``messaging.destination.name``, ``messaging.operation``,
  ``messaging.message.id``, partition/offset). The span is the current one
  while the loop body runs: it is attached when ``__anext__`` returns and ended
  and detached when the next message is asked for or the consumer closes, so
  whatever the body sends continues the trace. Other ways of receiving
  (``receive``, ``get_messages``, ``batches``) open no span by themselves: wrap
  the work in ``with consumer.trace(delivery, msg):``.
* The engine (:mod:`mlops_async.app`) runs each handler inside such a span of its
  input, so the outputs are children of it: one record going ETL -> train ->
  evaluate is one trace. A batch handler runs in one span linked to each input's
  context.

When it is on: ``opentelemetry`` is importable and a real ``TracerProvider`` is
configured (``trace.set_tracer_provider(...)``, or :func:`use` for this library
alone), decided when a producer or consumer starts. ``Producer(..., tracing=True)``
/ ``Consumer(..., tracing=True)`` or ``MLOPS_ASYNC_TRACING=1`` turn it on
whatever the provider (with none configured the context still passes through);
``tracing=False`` or ``MLOPS_ASYNC_TRACING=0`` turn it off.

When it is off, nothing here runs per message: the producer keeps its plain
``send`` (the traced one is chosen once, at start) and the consumer's
``__anext__`` pays one attribute check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .backends import Delivery

__all__ = ["ENV", "Tracing", "resolve", "system_name", "trace_context", "use"]

#: ``1``/``on``: trace whatever the provider; ``0``/``off``: never trace; unset: auto.
ENV = "MLOPS_ASYNC_TRACING"

_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")
_provider: TracerProvider | None = None  # set by use()
_missing = False  # opentelemetry is not installed (remembered: import once)

Headers = tuple[tuple[str, bytes], ...]
HeadersIn = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (instead of the global one); ``None`` undoes it.

    Applies to producers, consumers and apps started afterwards.
    """
    global _provider
    _provider = provider


def system_name(scheme: str) -> str:
    """``messaging.system`` for a backend's URL scheme."""
    scheme = scheme.split("+", 1)[0].lower()
    if scheme.startswith("redis"):
        return "redis"
    if scheme.startswith("postgres"):
        return "postgresql"
    return scheme or "unknown"


def resolve(option: bool | None, scheme: str = "") -> Tracing | None:
    """The tracer to use, or None when tracing is off (see the module docstring).

    Called once per producer/consumer/app start, never per message.
    """
    global _missing
    if option is False:
        return None
    env = os.environ.get(ENV, "").strip().lower()
    if option is None and env in _OFF:
        return None
    if _missing:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        _missing = True
        return None
    provider = _provider
    if provider is None:
        provider = trace.get_tracer_provider()
        if option is None and env not in _ON and isinstance(
            provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider
        ):
            return None  # nothing configured: off
    from ._version import __version__

    return Tracing(provider.get_tracer("mlops_async", __version__), system_name(scheme))


class Tracing:
    """Spans and header propagation for one producer, consumer or app."""

    def __init__(self, tracer: Tracer, system: str) -> None:
        from opentelemetry import context, propagate, trace

        self.tracer = tracer
        self.system = system
        self._context = context
        self._propagate = propagate
        self._trace = trace
        self._kind = trace.SpanKind
        self._current: tuple[Span, Token[Context]] | None = None  # the `async for` span, its token

    # -- producing --------------------------------------------------------------

    def inject(self, headers: HeadersIn) -> Headers:
        """``headers`` with the current trace context written in (replacing any old one)."""
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier)
        if not headers:
            return tuple((k, v.encode()) for k, v in carrier.items())
        items = headers.items() if isinstance(headers, Mapping) else headers
        fields = self._propagate.get_global_textmap().fields | carrier.keys()
        kept = [(k, v.encode() if isinstance(v, str) else bytes(v))
                for k, v in items if k.lower() not in fields]
        return (*kept, *((k, v.encode()) for k, v in carrier.items()))

    @contextmanager
    def publishing(self, topics: Sequence[str], headers: HeadersIn, msg: Any = None,
                   count: int | None = None) -> Iterator[Headers]:
        """A PRODUCER span ``"<topic> publish"``; yields the headers that carry it."""
        topic = topics[0] if len(topics) == 1 else ",".join(topics)
        attrs: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.destination.name": topic,
            "messaging.operation": "publish",
            "messaging.operation.type": "send",
        }
        if count is not None:
            attrs["messaging.batch.message_count"] = count
        else:
            mid = getattr(msg, "id", None)
            if isinstance(mid, str):
                attrs["messaging.message.id"] = mid
        with self.tracer.start_as_current_span(f"{topic} publish", kind=self._kind.PRODUCER,
                                               attributes=attrs):
            yield self.inject(headers)

    # -- consuming --------------------------------------------------------------

    def extract(self, headers: Headers | None) -> Any:
        """The context a producer wrote in ``headers`` (an empty one if none)."""
        if not headers:
            return self._context.Context()
        carrier = {}
        for k, v in headers:
            try:
                carrier[k.lower()] = v.decode()
            except UnicodeDecodeError:
                continue
        return self._propagate.extract(carrier, context=self._context.Context())

    def _attributes(self, d: Delivery, msg: Any, system: str | None) -> dict[str, Any]:
        system = system or self.system
        attrs: dict[str, Any] = {
            "messaging.system": system,
            "messaging.destination.name": d.topic,
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.destination.partition.id": str(d.partition),
        }
        mid = getattr(msg, "id", None)
        if isinstance(mid, str):
            attrs["messaging.message.id"] = mid
        elif isinstance(d.offset, str):  # Redis stream entry ids name the message
            attrs["messaging.message.id"] = d.offset
        if system == "kafka" and isinstance(d.offset, int):
            attrs["messaging.kafka.destination.partition"] = d.partition
            attrs["messaging.kafka.message.offset"] = d.offset
        if d.key is not None and system == "kafka":
            attrs["messaging.kafka.message.key"] = d.key.decode(errors="replace")
        return attrs

    def start(self, d: Delivery, msg: Any = None, system: str | None = None) -> Span:
        """A CONSUMER span ``"<topic> process"``, child of the context in ``d``'s headers."""
        return self.tracer.start_span(f"{d.topic} process", context=self.extract(d.headers),
                                      kind=self._kind.CONSUMER,
                                      attributes=self._attributes(d, msg, system))

    @contextmanager
    def processing(self, d: Delivery, msg: Any = None,
                   system: str | None = None) -> Iterator[Span]:
        """Run a block inside ``d``'s CONSUMER span (current while the block runs)."""
        span = self.start(d, msg, system)
        with self._trace.use_span(span, end_on_exit=True):
            yield span

    @contextmanager
    def processing_batch(self, ds: Sequence[Delivery],
                         system: str | None = None) -> Iterator[Span]:
        """One CONSUMER span for a batch, linked to each input's producer context."""
        links = []
        for d in ds:
            ctx = self._trace.get_current_span(self.extract(d.headers)).get_span_context()
            if ctx.is_valid:
                links.append(self._trace.Link(ctx))
        topic = ds[0].topic if ds else ""
        attrs: dict[str, Any] = {
            "messaging.system": system or self.system,
            "messaging.destination.name": topic,
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(ds),
        }
        with self.tracer.start_as_current_span(f"{topic} process", kind=self._kind.CONSUMER,
                                               attributes=attrs, links=links) as span:
            yield span

    def begin(self, d: Delivery, msg: Any = None) -> None:
        """Open ``d``'s span and make it current until :meth:`end` (``async for``)."""
        span = self.start(d, msg)
        token = self._context.attach(self._trace.set_span_in_context(span))
        self._current = (span, token)

    def end(self) -> None:
        """End the span :meth:`begin` opened; detach it where it is still the current one."""
        current, self._current = self._current, None
        if current is None:
            return
        span, token = current
        if self._trace.get_current_span() is span:
            # Same task and nothing attached on top: restore the context before it. (From
            # another task the token cannot be reset; the span just ends.)
            self._context.detach(token)
        span.end()


def trace_context(tracing: Tracing | None, d: Delivery | None,
                  msg: Any = None) -> AbstractContextManager[Any]:
    """``tracing.processing(d, msg)``, or a context manager doing nothing when off."""
    if tracing is None or d is None:
        return nullcontext()
    return tracing.processing(d, msg)
