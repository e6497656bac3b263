"""The pipeline's graph: stages and queues as nodes, laid out left to right by dependency.

Edges come from declarations (a :class:`~mlops_async.Pipeline`'s stages, an
:class:`~mlops_async.App`'s handlers and sources) or, with none given, from the
replicas' heartbeats (which topics each reads and writes). Queues are named by
topic: that is what heartbeats and the Admin know them by.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..app.heartbeat import ReplicaStats

__all__ = ["Graph", "StageNode", "graph_of", "layout"]


@dataclass
class StageNode:
    """A stage: the app (consumer group) that runs it, the topics it reads and writes."""

    name: str
    app: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    replicas: int | None = None  # declared replica count, when known
    group: str = ""  # its consumer group, when not the app's name


@dataclass
class Graph:
    stages: dict[str, StageNode] = field(default_factory=dict)
    #: Topic -> the name it was declared under (the topic itself when inferred).
    queues: dict[str, str] = field(default_factory=dict)
    declared: bool = False

    def add(self, stage: StageNode) -> None:
        name, n = stage.name, 2
        while name in self.stages:  # two targets with a stage of one name: keep both
            name, n = f"{stage.name}#{n}", n + 1
        stage.name = name
        self.stages[name] = stage
        for t in (*stage.inputs, *stage.outputs):
            self.queues.setdefault(t, t)

    def edges(self) -> list[tuple[str, str]]:
        """``(from, to)`` node ids: ``q:<topic>`` -> ``s:<stage>`` -> ``q:<topic>``."""
        out: list[tuple[str, str]] = []
        for s in self.stages.values():
            out += [(f"q:{t}", f"s:{s.name}") for t in s.inputs]
            out += [(f"s:{s.name}", f"q:{t}") for t in s.outputs]
        return out

    def groups(self) -> list[str]:
        """The consumer groups of the stages that read a queue: whose lag the page shows."""
        return sorted({s.group or s.app for s in self.stages.values() if s.inputs})

    def nodes(self) -> list[str]:
        return [*(f"s:{n}" for n in self.stages), *(f"q:{t}" for t in self.queues)]


def _from_pipeline(target: Any, graph: Graph) -> None:
    def topic(name: str) -> str:
        q = target.queues.get(name)
        return q.topic if q is not None else name

    for st in target.stages.values():
        inputs = [topic(st.input)] if st.input is not None else []
        dlq = st.handler_options.get("dead_letter")
        graph.add(StageNode(
            st.name, f"{target.name}.{st.name}", inputs, [topic(o) for o in st.outputs],
            [topic(dlq) if dlq else f"{t}.dlq" for t in inputs], st.replicas))
        for name in (*([st.input] if st.input else []), *st.outputs):
            graph.queues[topic(name)] = name


def _from_app(target: Any, graph: Graph) -> None:
    def topic(name: str) -> str:
        return str(target.queues[name].topic)

    for src in target._sources:  # sources are declarations too: what a run starts from
        graph.add(StageNode(src.name, target.name, [], [topic(o) for o in src.outputs]))
    for r in target.routes:
        graph.add(StageNode(r.name, target.name, [topic(r.input)],
                            [topic(o) for o in r.outputs], [topic(r.dead_letter)],
                            group=target.group))
        for name in (r.input, *r.outputs):
            graph.queues[topic(name)] = name


def graph_of(targets: Iterable[Any], beats: Iterable[ReplicaStats] = ()) -> Graph:
    """The graph of ``targets`` (Pipelines and Apps); with none, of the heartbeats."""
    from ..app import App
    from ..pipeline import Pipeline

    graph = Graph()
    for t in targets:
        graph.declared = True
        if isinstance(t, Pipeline):
            _from_pipeline(t, graph)
        elif isinstance(t, App):
            _from_app(t, graph)
        else:
            raise TypeError(f"not a Pipeline or an App: {t!r}")
    if graph.declared:
        return graph
    by_app: dict[str, StageNode] = {}
    for b in sorted(beats, key=lambda b: b.at):  # the latest beat says what it reads now
        by_app[b.app] = StageNode(b.stage, b.app, list(b.inputs), list(b.outputs),
                                  [f"{t}.dlq" for t in b.inputs], group=b.group)
    for node in sorted(by_app.values(), key=lambda n: n.name):
        graph.add(node)
    return graph


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """Column and row of each node: columns by longest path from a node with no input,
    rows ordered within a column by where their predecessors sit (fewer crossings).

    A cycle is cut at the edge that closes it (depth-first, in the given order),
    so a loop of queues still gets a left-to-right drawing.
    """
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in succ and b in succ:
            succ[a].append(b)
    # Depth-first: drop back edges, keep the rest as a DAG.
    state: dict[str, int] = {}
    dag: dict[str, list[str]] = {n: [] for n in nodes}
    order: list[str] = []
    for root in nodes:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            if i < len(succ[node]):
                stack[-1] = (node, i + 1)
                nxt = succ[node][i]
                if state.get(nxt) == 1:
                    continue  # a back edge closes a cycle
                dag[node].append(nxt)
                if nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                order.append(node)
                stack.pop()
    column = dict.fromkeys(nodes, 0)
    for node in reversed(order):  # a topological order of the DAG
        for nxt in dag[node]:
            column[nxt] = max(column[nxt], column[node] + 1)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, outs in dag.items():
        for b in outs:
            preds[b].append(a)
    place: dict[str, tuple[int, int]] = {}
    for col in range(max(column.values(), default=-1) + 1):
        members = [n for n in nodes if column[n] == col]

        def weight(n: str) -> tuple[float, int]:
            rows = [place[p][1] for p in preds[n] if p in place]
            return (sum(rows) / len(rows) if rows else float("inf"), nodes.index(n))

        for row, n in enumerate(sorted(members, key=weight)):
            place[n] = (col, row)
    return place
