"""Shared helpers for the benchmark scripts: a typical message, timing, output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlops_async import MessageBuilder, MessageType, MLOpsMessage

RESULTS = Path(__file__).resolve().parent / "results"


def typical_message(i: int = 0) -> MLOpsMessage:
    """A feature-pipeline record of about 380 bytes encoded (msgpack)."""
    return (
        MessageBuilder()
        .with_msg_type(MessageType.DATA)
        .with_creator_type("ETL")
        .with_creator("feature-etl-worker-3")
        .with_stage("ETL")
        .with_next_task("TRAIN")
        .with_correlation_id("run-2026-11-21-0001")
        .with_user_msg("feature vector for user session")
        .with_additional_arguments({
            "i": i,
            "user_id": 1_000_000 + i,
            "features": [round(0.001 * (i % 997) + k * 0.37, 6) for k in range(16)],
            "label": i % 2,
            "source": "clickstream",
        })
        .build()
    )


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def rss_mib() -> float:
    """Current resident set size of this process, MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def save(name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
        **(extra or {}),
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    save_chart(out)
    return out


def save_chart(json_path: Path) -> Path | None:
    """Render the results JSON into a PNG beside it (needs matplotlib: the bench extra)."""
    try:
        from _charts import render
    except ImportError as exc:
        print(f"no chart for {json_path.name} ({exc}; pip install -e '.[bench]')")
        return None
    png = render(json_path)
    if png is not None:
        print(f"chart {png}")
    return png


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) < 1e6 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


@contextlib.contextmanager
def broker(kind: str, given: str | None = None) -> Iterator[str]:
    """The bus URL to measure: ``given``, or our own ``kind`` server on a free port."""
    if given:
        yield given
        return
    from mlops_async.testing.brokers import postgres_server, redis_server, tansu_server

    if kind == "postgresql":
        pg = postgres_server()
        if pg is None:
            raise SystemExit("no PostgreSQL binaries (apt-get install postgresql)")
        server = pg
    else:
        server = tansu_server() if kind == "kafka" else redis_server()
    server.start()
    try:
        if kind == "kafka":
            yield f"kafka://127.0.0.1:{server.port}"
        elif kind == "postgresql":
            yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        else:
            yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def print_ratios(ratios: dict[str, float]) -> None:
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
