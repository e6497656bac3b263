"""The ``mlops-async`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .admin import Admin
from .demo import DemoResult, run_demo
from .endpoint import ENV_VAR, redact
from .errors import BusError, ConfigurationError
from .message import MessageType, MLOpsMessage

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Table
    except ImportError:  # rich is the 'cli' extra: fall back to plain lines
        return _demo_plain(args)

    console = Console()
    console.print(f"[bold]mlops_async demo[/] on [cyan]{redact(args.url)}[/] with "
                  f"{args.records} records")
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    ) as progress:
        bars = {
            stage: progress.add_task(stage, total=100, note="waiting")
            for stage in ("ETL", "TRAIN", "EVALUATE")
        }

        def on_status(msg: MLOpsMessage) -> None:
            bar = bars.get(msg.stage or "")
            if bar is None:
                return
            if msg.msg_type is MessageType.START:
                progress.update(bar, completed=5, note="started")
            elif msg.msg_type is MessageType.PROGRESS:
                pct = msg.additional_arguments.get("percent", 0)
                progress.update(bar, completed=pct, note=f"{pct}%")
            elif msg.msg_type is MessageType.COMPLETE:
                note = msg.user_message or "done"
                if "accuracy" in msg.additional_arguments:
                    note = f"accuracy {msg.additional_arguments['accuracy']:.3f}"
                progress.update(bar, completed=100, note=note)

        result = asyncio.run(run_demo(args.url, args.records, on_status=on_status))

    table = Table(title="pipeline summary")
    for col in ("stage", "messages", "seconds", "messages/s"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for st in result.stages.values():
        table.add_row(
            st.name, str(st.messages), f"{st.finished - st.started:.3f}", f"{st.rate:,.0f}"
        )
    console.print(table)
    console.print(_summary(result))
    return 0


def _summary(result: DemoResult) -> str:
    return (
        f"{result.records} records, {result.status_messages} status messages, "
        f"accuracy {result.accuracy:.3f}, total {result.seconds:.2f}s"
    )


def _demo_plain(args: argparse.Namespace) -> int:
    def on_status(msg: MLOpsMessage) -> None:
        print(f"[{msg.stage}] {msg.msg_type.value} {msg.user_message or ''}")

    result = asyncio.run(run_demo(args.url, args.records, on_status=on_status))
    for st in result.stages.values():
        print(f"{st.name:<9} {st.messages:>8} msgs {st.rate:>12,.0f} msg/s")
    print(_summary(result))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .app import App
    from .metrics import Metrics, serve_metrics
    from .pipeline import Pipeline, run_replicas
    from .queues import import_object, load_config

    target = import_object(args.target)
    params = dict(p.split("=", 1) for p in args.param)
    if isinstance(target, Pipeline):
        if args.url:
            target.url = args.url
        if args.stage is None:
            asyncio.run(target.run())
            return 0
        if args.replicas and args.replicas > 1:
            return run_replicas(args.target, args.stage, args.replicas, _child_args(args))
        app = target.app_for(args.stage, target.params_for(args.stage, params))
        if target.finite:
            # One replica of a finite run: ends once its upstream ended and it drained.
            replicas = os.environ.get("MLOPS_REPLICAS")
            app.ending = target.ending(
                args.stage, os.environ.get("MLOPS_RUN_ID", "default"),
                f"{socket.gethostname()}-{os.getpid()}", int(replicas) if replicas else None)
    elif isinstance(target, App):
        app = target
    else:
        raise ConfigurationError(f"{args.target} is neither an App nor a Pipeline")
    if args.url:
        app.url = args.url
    if args.config:
        for q in load_config(args.config).queues:
            app.queues[q.name] = q
    if args.concurrency:
        app.max_concurrency = args.concurrency
    server = None
    if args.metrics_port is not None:
        if app.metrics is None:
            app.metrics = Metrics(app.name)
        server = serve_metrics(app.metrics, args.metrics_port, args.metrics_addr,
                               health=app.health, ready=app.readiness)
    try:
        asyncio.run(app.run())
    finally:
        if server is not None:
            server.close()
    return 0


def _child_args(args: argparse.Namespace) -> list[list[str]]:
    """Command-line arguments for each replica process of ``run --replicas N``."""
    common: list[str] = []
    for flag, value in (("--url", args.url), ("--config", args.config),
                        ("--concurrency", args.concurrency)):
        if value is not None:
            common += [flag, str(value)]
    for p in args.param:
        common += ["--param", p]
    out = []
    for i in range(args.replicas):
        extra = [] if args.metrics_port is None else [
            "--metrics-port", str(args.metrics_port + i), "--metrics-addr", args.metrics_addr]
        out.append(common + extra)  # one /metrics port per replica
    return out


def _docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .asyncapi import asyncapi_document, render
    from .queues import import_object

    fmt = args.format or ("json" if args.out and args.out.endswith(".json") else "yaml")
    text = render(asyncapi_document(import_object(args.target), url=args.url), fmt)
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            raise ConfigurationError(f"cannot write {args.out}: {exc}") from exc
    else:
        sys.stdout.write(text)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from .deploy import k8s_manifests, render_manifests, write_manifests
    from .queues import import_object

    params: dict[str, dict[str, str]] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not (sep and dot and stage and name):
            raise ConfigurationError(f"not STAGE.NAME=VALUE: {item!r}")
        params.setdefault(stage, {})[name] = value
    env = dict(item.split("=", 1) if "=" in item else (item, "") for item in args.env)
    docs = k8s_manifests(
        import_object(args.target), args.target, image=args.image, namespace=args.namespace,
        url=args.url, url_secret=args.url_secret, params=params, env=env,
        metrics_port=args.metrics_port or None,
        warn=lambda m: print(f"mlops-async: warning: {m}", file=sys.stderr),
    )
    if args.out == "-":
        sys.stdout.write(render_manifests(docs))
    else:
        for path in write_manifests(docs, args.out):
            print(path)
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from .app import replay_dead_letters

    n = asyncio.run(replay_dead_letters(_bus(args), args.queue, limit=args.limit,
                                        **_options(args)))
    print(f"replayed {n} dead letter(s) from {args.queue}")
    return 0


async def _admin(args: argparse.Namespace) -> int:
    async with Admin(_bus(args), **_options(args)) as admin:
        if args.command == "topics":
            for t in sorted(await admin.list_topics(), key=lambda t: t.name):
                extra = "" if t.messages is None else f"  messages={t.messages}"
                print(f"{t.name}  partitions={t.partitions}{extra}")
        else:
            for g in await admin.describe_groups():
                total = sum(p.lag for p in g.lag)
                print(f"{g.group}  members={g.members}  state={g.state}  lag={total}")
                for p in g.lag:
                    print(
                        f"  {p.topic}[{p.partition}] committed={p.committed} end={p.end_offset} "
                        f"lag={p.lag}"
                    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-async",
        description="Run, watch and document mlops_async apps and pipelines: an asyncio event "
                    "bus over Kafka, Redis or an in-process bus.",
        epilog="Bus URLs: memory://name, kafka://host:9092, redis://host:6379/0; or set "
               "MLOPS_BUS_URL. 'mlops-async COMMAND -h' describes each command.",
    )
    p.add_argument("--version", action="version", version=f"mlops-async {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", required=True)
    d = _command(sub, "demo", "run the demo ETL -> train -> evaluate pipeline")
    d.add_argument("--url", default="memory://demo", help="bus URL (default: memory://demo)")
    d.add_argument("--records", type=int, default=20_000, help="feature records to send")
    d.add_argument("--plain", action="store_true", help="plain text output, no rich")
    d.add_argument("--engine", action="store_true", help="run train/evaluate as App handlers")
    for name, text in (("topics", "list topics"), ("groups", "consumer groups and their lag")):
        a = _command(sub, name, text)
        a.add_argument("--url", default=None, help="bus URL (default: MLOPS_BUS_URL)")
        _client_options(a)
    r = _command(sub, "run", "run an App or a Pipeline: mlops-async run module:app")
    r.add_argument("target", help="module:attribute of an mlops_async.App or Pipeline")
    r.add_argument("--url", default=None, help="default bus URL for the app's queues")
    r.add_argument("--config", default=None, help="queues file (.yaml/.toml)")
    r.add_argument("--metrics-port", type=int, default=None,
                   help="serve /metrics, /healthz and /readyz on this port")
    r.add_argument("--metrics-addr", default="127.0.0.1", help="address for /metrics")
    r.add_argument("--concurrency", type=int, default=None, help="max messages in flight")
    r.add_argument("--stage", default=None, help="run only this stage of a Pipeline")
    r.add_argument("--replicas", type=int, default=None, help="run the stage as N processes")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="stage parameter (repeatable)")
    a = _command(sub, "docs", "AsyncAPI 3.0 document: mlops-async docs module:app")
    a.add_argument("target", help="module:attribute of an mlops_async.App or Pipeline")
    a.add_argument("--out", default=None, help="write to this file (.yaml/.yml/.json)")
    a.add_argument("--format", choices=["yaml", "json"], default=None,
                   help="output format (default: from --out, else yaml)")
    a.add_argument("--url", default=None, help="default bus URL for the servers")
    dp = _command(sub, "deploy", "deployment manifests for a Pipeline or an App")
    dsub = dp.add_subparsers(dest="deploy_command", required=True)
    k = _command(dsub, "k8s", "Kubernetes manifests: a Deployment per stage (a Job per stage "
                              "of a finite pipeline)")
    k.add_argument("target", help="module:attribute of an mlops_async.Pipeline or App")
    k.add_argument("--out", default="-", help="directory for one YAML file per stage "
                                              "(default: - for one stream on stdout)")
    k.add_argument("--image", default=None, help="image with your code and mlops-async "
                                                 "(default: <name>:latest)")
    k.add_argument("--namespace", default=None, help="Kubernetes namespace")
    k.add_argument("--url", default=None, help="bus URL for the pods (default: the pipeline's)")
    k.add_argument("--url-secret", default=None, metavar="NAME[:KEY]",
                   help="take the bus URL from this Secret (key 'url' by default)")
    k.add_argument("--param", action="append", default=[], metavar="STAGE.NAME=VALUE",
                   help="stage parameter (repeatable)")
    k.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for every pod (repeatable)")
    k.add_argument("--metrics-port", type=int, default=9100,
                   help="port for /metrics and the probes (default 9100; 0: none)")
    t = _command(sub, "top", "live view of every queue: rates, lag, dead letters")
    t.add_argument("--url", default=None, help="bus URL (default: MLOPS_BUS_URL)")
    _client_options(t)
    t.add_argument("--group", default=None, help="only this consumer group")
    t.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    q = _command(sub, "dlq", "dead-letter queues")
    qsub = q.add_subparsers(dest="dlq_command", required=True)
    rp = _command(qsub, "replay", "send dead letters back to their source topics")
    rp.add_argument("--queue", required=True, help="dead-letter topic, e.g. raw_events.dlq")
    rp.add_argument("--url", default=None, help="bus URL (default: MLOPS_BUS_URL)")
    rp.add_argument("--limit", type=int, default=None, help="replay at most this many")
    _client_options(rp)
    u = _command(sub, "ui", "live web page of a pipeline: graph, rates, replicas, dead letters")
    u.add_argument("targets", nargs="*", metavar="module:pipeline",
                   help="Pipelines or Apps that draw the graph (default: from heartbeats)")
    u.add_argument("--url", default=None, help="bus URL (default: MLOPS_BUS_URL)")
    u.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on")
    u.add_argument("--demo", action="store_true", help="show a demo pipeline run in memory")
    _client_options(u)
    return p


def _command(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text)
    return parser


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE",
                        help="broker client option, e.g. -o security_protocol=SASL_SSL "
                             "(repeatable; values are parsed as JSON when they can be)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in getattr(args, "option", []):
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"not NAME=VALUE: {item!r}")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def _bus(args: argparse.Namespace) -> str:
    """The URL a command that inspects a bus works on: never a silent in-memory bus."""
    url = args.url or os.environ.get(ENV_VAR)
    if not url:
        raise ConfigurationError(
            f"{args.command} needs a bus: pass --url kafka://host:9092 (or redis://...) or set "
            f"{ENV_VAR}; the in-memory bus lives inside one process and has nothing to show here"
        )
    return str(url)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Like uvicorn: 'run module:app' finds a module in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "demo" and args.engine:
            from .demo import run_engine_demo

            result = asyncio.run(run_engine_demo(args.url, args.records))
            print(_summary(result))
            return 0
        if args.command == "demo":
            return _demo_plain(args) if args.plain else _demo(args)
        if args.command == "run":
            return _run(args)
        if args.command == "dlq":
            return _dlq(args)
        if args.command == "deploy":
            return _deploy(args)
        if args.command == "docs":
            return _docs(args)
        if args.command == "ui":
            from .ui.command import run_ui_command

            return run_ui_command(None if args.demo else _bus(args), args.targets,
                                  host=args.host, port=args.port, demo=args.demo,
                                  client_options=_options(args))
        if args.command == "top":
            from .top import run_top

            asyncio.run(run_top(_bus(args), group=args.group, interval=args.interval,
                                client_options=_options(args)))
            return 0
        runner: Any = _admin(args)
        return int(asyncio.run(runner))
    except BusError as exc:
        print(f"mlops-async: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
