"""Render a benchmark's results JSON into a PNG bar chart next to it.

Rows are drawn as horizontal bars of their measure (msg/s where the benchmark has
it, else nanoseconds per operation), labelled with the value and the row's ratio
column when there is one. Rows that carry a ``group`` (bench_peers) get one panel
per group, coloured by ``system``.

usage: python benchmarks/_charts.py [benchmarks/results/NAME.json ...]   (default: all)
requires: matplotlib (pip install -e '.[bench]')
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch

RESULTS = Path(__file__).resolve().parent / "results"

# What a bar measures, in order of preference, and whether more is better.
MEASURES = [("msg_per_s", "messages per second", True),
            ("round_trip_ns", "ns per round trip (lower is better)", False),
            ("encode_ns", "ns per encode (lower is better)", False),
            ("makespan_s", "makespan, seconds (lower is better)", False)]
# Label parts, in order; the first ratio column found is printed after the value.
LABELS = ["backend", "system", "path", "codec", "case", "shape", "replicas"]
RATIOS = ["vs_mlops_async", "x_codec_round_trip", "x_raw", "engine_vs_bare", "speedup",
          "encode_x_slower", "encode_x_array", "x_ideal", "x_default"]
COLOURS = {"mlops_async": "#1f6feb", "FastStream": "#d97706", "raw client": "#6b7280"}
DEFAULT = "#1f6feb"


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}" if v >= 10 else f"{v:.2f}"


def _label(row: dict[str, Any]) -> str:
    parts = [str(row[k]) for k in LABELS if k in row and k != "system"]
    if "replicas" in row and len(parts) == 1:
        parts = [f"{row['replicas']} replica(s)"]
    return "\n".join(textwrap.wrap(" / ".join(parts), 44)) or "?"


def _measure(rows: list[dict[str, Any]]) -> tuple[str, str, bool] | None:
    for key, title, more in MEASURES:
        if rows and all(isinstance(r.get(key), int | float) for r in rows):
            return key, title, more
    return None


def _panel(ax: Any, rows: list[dict[str, Any]], key: str, title: str) -> None:
    values = [float(r[key]) for r in rows]
    colours = [COLOURS.get(str(r.get("system")), DEFAULT) for r in rows]
    y = list(range(len(rows)))[::-1]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [_label(r) for r in rows], fontsize=8)
    top = max(values) if values else 1.0
    ax.set_xlim(0, top * 1.3)
    for yi, v, r in zip(y, values, rows, strict=True):
        ratio = next((r[k] for k in RATIOS if isinstance(r.get(k), int | float)), None)
        text = _fmt(v) + (f"  ({ratio:.2f}x)" if ratio is not None else "")
        ax.text(v + top * 0.01, yi, text, va="center", fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def render(json_path: Path) -> Path | None:
    """Write NAME.png next to NAME.json; None when the rows have no measure to draw."""
    payload = json.loads(Path(json_path).read_text())
    rows: list[dict[str, Any]] = payload.get("rows", [])
    found = _measure(rows)
    if found is None:
        return None
    key, unit, _ = found
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("group", "")), []).append(r)
    heights = [0.9 + 0.42 * len(g) for g in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, sum(heights) + 0.9),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, grp) in zip(axes[:, 0], groups.items(), strict=True):
        _panel(ax, grp, key, name or unit)
    axes[-1, 0].set_xlabel(unit, fontsize=9)
    systems = list(dict.fromkeys(str(r["system"]) for r in rows if "system" in r))
    if systems:
        handles = [Patch(color=COLOURS.get(s, DEFAULT)) for s in systems]
        fig.legend(handles, systems, loc="upper right", fontsize=8, ncols=len(systems),
                   frameon=False)
    head = f"{payload.get('benchmark', json_path.stem)}"
    if "n" in payload:
        head += f": {payload['n']:,} messages"
    if "runs" in payload:
        head += f", median of {payload['runs']} rounds"
    head += f"  ({payload.get('cpus', '?')} CPUs, Python {payload.get('python', '?')}"
    head += f", {payload.get('when', '')[:10]})"
    if any("vs_mlops_async" in r for r in rows):
        head += "\nbar label: msg/s (rate / mlops_async per-message path, same group)"
    fig.suptitle(head, fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    out = Path(json_path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(RESULTS.glob("*.json"))
    for p in paths:
        out = render(p)
        print(f"{p.name}: {out if out else 'nothing to draw'}")


if __name__ == "__main__":
    main(sys.argv[1:])
