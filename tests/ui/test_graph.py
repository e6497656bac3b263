"""The page's graph: nodes and edges from declarations or heartbeats, laid out by dependency."""

from __future__ import annotations

import pytest

from mlops_async import App, Pipeline
from mlops_async.app.heartbeat import ReplicaStats
from mlops_async.ui.graph import graph_of, layout

from .uipipe import pipeline


def beat(app: str, stage: str, inputs: list[str], outputs: list[str], at: float = 1.0,
         replica: str = "r1") -> ReplicaStats:
    return ReplicaStats(app=app, stage=stage, replica=replica, host="h", pid=1, processed=0,
                        failed=0, published=0, in_rate=0.0, out_rate=0.0, at=at,
                        inputs=inputs, outputs=outputs)


def test_a_chain_takes_one_column_per_step() -> None:
    nodes = ["s:c", "q:x", "s:a", "q:y", "s:b"]
    edges = [("s:a", "q:x"), ("q:x", "s:b"), ("s:b", "q:y"), ("q:y", "s:c")]
    assert layout(nodes, edges) == {"s:a": (0, 0), "q:x": (1, 0), "s:b": (2, 0),
                                    "q:y": (3, 0), "s:c": (4, 0)}


def test_a_node_sits_after_its_longest_path() -> None:
    # a -> d directly and a -> b -> c -> d: d goes after c, not next to b.
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]
    place = layout(["a", "b", "c", "d"], edges)
    assert [place[n][0] for n in "abcd"] == [0, 1, 2, 3]


def test_a_fan_out_stacks_siblings_in_one_column() -> None:
    edges = [("src", "left"), ("src", "right"), ("left", "join"), ("right", "join")]
    place = layout(["join", "right", "left", "src"], edges)
    assert place["src"] == (0, 0) and place["join"] == (2, 0)
    assert {place["left"], place["right"]} == {(1, 0), (1, 1)}


def test_rows_follow_their_predecessors_to_avoid_crossings() -> None:
    edges = [("a", "a2"), ("b", "b2")]
    place = layout(["a", "b", "b2", "a2"], edges)
    assert place["a"][1] < place["b"][1] and place["a2"][1] < place["b2"][1]


def test_a_cycle_is_cut_and_still_laid_out_left_to_right() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a")]
    place = layout(["a", "b", "c"], edges)
    assert [place[n][0] for n in "abc"] == [0, 1, 2]


def test_isolated_nodes_and_unknown_edges() -> None:
    assert layout(["x", "y"], [("x", "nowhere")]) == {"x": (0, 0), "y": (0, 1)}
    assert layout([], []) == {}


def test_a_pipeline_declares_its_stages_queues_and_dead_letters() -> None:
    g = graph_of([pipeline])
    assert g.declared
    assert set(g.stages) == {"parse", "sink"}
    assert g.stages["parse"].app == "uit.parse" and g.stages["parse"].replicas == 2
    assert g.queues == {"uit.in": "in", "uit.mid": "mid"}
    assert g.stages["sink"].dead_letters == ["uit.mid.dlq"]
    assert sorted(g.edges()) == sorted([("q:uit.in", "s:parse"), ("s:parse", "q:uit.mid"),
                                        ("q:uit.mid", "s:sink")])


def test_a_finite_pipeline_starts_from_its_source() -> None:
    p = Pipeline("fin")

    @p.stage(outputs=["rows"])
    async def read() -> None:
        return None

    @p.stage(input="rows", outputs=["out"], dead_letter="bad-rows")
    async def work(msg: object) -> None:
        return None

    g = graph_of([p])
    place = layout(g.nodes(), g.edges())
    assert place["s:read"][0] == 0 and place["q:rows"][0] == 1 and place["s:work"][0] == 2
    assert g.stages["read"].inputs == [] and g.stages["work"].dead_letters == ["bad-rows"]


def test_an_app_declares_one_stage_per_handler_and_source() -> None:
    app = App("shop", url="memory://", heartbeat=None)
    app.queue("orders", value="shop.orders")

    @app.source(outputs=["orders"])
    async def feed() -> None:
        return None

    @app.handler(input="orders", outputs=["invoices"])
    async def bill(msg: object) -> None:
        return None

    g = graph_of([app])
    assert {n: (s.app, s.inputs, s.outputs) for n, s in g.stages.items()} == {
        "feed": ("shop", [], ["shop.orders"]),
        "bill": ("shop", ["shop.orders"], ["invoices"]),
    }
    assert g.stages["bill"].dead_letters == ["shop.orders.dlq"]


def test_two_targets_with_one_stage_name_keep_both() -> None:
    g = graph_of([pipeline, pipeline])
    assert set(g.stages) == {"parse", "sink", "parse#2", "sink#2"}


def test_without_declarations_the_graph_comes_from_heartbeats() -> None:
    beats = [beat("etl", "etl", [], ["raw"]),
             beat("train", "train", ["raw"], ["old"], at=1.0),
             beat("train", "train", ["raw"], ["models"], at=2.0, replica="r2")]
    g = graph_of([], beats)
    assert not g.declared
    assert {n: (s.inputs, s.outputs) for n, s in g.stages.items()} == {
        "etl": ([], ["raw"]), "train": (["raw"], ["models"])}  # the latest beat wins
    assert set(g.queues) == {"raw", "models"}


def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError, match="not a Pipeline or an App"):
        graph_of([object()])


def test_the_groups_whose_lag_is_shown_are_the_reading_stages() -> None:
    assert graph_of([pipeline]).groups() == ["uit.parse", "uit.sink"]
    app = App("shop", url="memory://", group="billing", heartbeat=None)

    @app.handler(input="orders")
    async def bill(msg: object) -> None:
        return None

    assert graph_of([app]).groups() == ["billing"]
    beats = [beat("etl", "etl", [], ["raw"]), beat("train", "train", ["raw"], [])]
    assert graph_of([], beats).groups() == ["train"]
