"""`mlops-async docs`: AsyncAPI 3.0 documents, validated against the official JSON Schema.

The schema is the one the AsyncAPI initiative publishes in the npm package
``@asyncapi/specs`` (no PyPI package ships it): the first run fetches that
pinned version with ``npm pack`` into a cache directory, every run validates
with ``jsonschema``. Without npm or the registry the tests fail, never skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import numpy as np
import numpy.typing as npt
import pytest
import yaml

from mlops_async import App, ConfigurationError, MLOpsMessage, Pipeline
from mlops_async.asyncapi import asyncapi_document, render
from mlops_async.cli import main

ROOT = Path(__file__).resolve().parents[3]
SPECS = "@asyncapi/specs@6.11.1"  # pinned: holds schemas/3.0.0.json, the AsyncAPI 3.0.0 schema
SCHEMA_MEMBER = "package/schemas/3.0.0.json"


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlops-async" / SPECS.replace("/", "+")


@pytest.fixture(scope="session")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    """A validator of the official AsyncAPI 3.0.0 JSON Schema (fetched once, then cached)."""
    target = _cache_dir() / "3.0.0.json"
    if not target.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is needed once to fetch {SPECS} (the AsyncAPI 3.0 JSON Schema)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            proc = subprocess.run([npm, "pack", SPECS, "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True, timeout=300)
            tarballs = list(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or len(tarballs) != 1:
                pytest.fail(f"npm pack {SPECS} failed: {proc.stderr[-2000:]}")
            with tarfile.open(tarballs[0]) as tar:  # one known member, read as data
                member = tar.extractfile(SCHEMA_MEMBER)
                assert member is not None, f"{SPECS} has no {SCHEMA_MEMBER}"
                staged = Path(tmp) / "3.0.0.json"
                staged.write_bytes(member.read())
            staged.replace(target)  # atomic: a concurrent run sees all of it or nothing
    schema = json.loads(target.read_text())
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def check(doc: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    """Valid AsyncAPI 3.0, and every local reference points at something in the document."""
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]


def test_the_validator_is_not_vacuous(asyncapi_validator: jsonschema.Draft7Validator) -> None:
    doc = asyncapi_document(demo_pipeline())
    check(doc, asyncapi_validator)
    broken = json.loads(json.dumps(doc))
    broken["operations"]["train"]["action"] = "consume"
    assert list(asyncapi_validator.iter_errors(broken))
    del broken["info"]
    assert list(asyncapi_validator.iter_errors(broken))


# -- the README's example app, run through the command line as a user would ----------

QUEUES_YML = """\
queues:
  - name: raw_events
    value: events.raw.v1
    schema: readme_example:RawEvent
  - name: features
    value: features.v1
    schema: readme_example:Feature
  - name: alerts
    type: redis
    url: redis://localhost:6379/0
"""


def readme_example(tmp_path: Path) -> Path:
    """The stream-engine example of README.md as a module, with the queues file it names."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if 'App("feature_worker"' in b]
    assert len(found) == 1, "README.md no longer has the feature_worker App example"
    (tmp_path / "readme_example.py").write_text(found[0])
    (tmp_path / "queues.yml").write_text(QUEUES_YML)
    return tmp_path


def docs_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])}
    env.pop("MLOPS_BUS_URL", None)
    return subprocess.run([sys.executable, "-m", "mlops_async", "docs", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_readme_app_document(tmp_path: Path,
                             asyncapi_validator: jsonschema.Draft7Validator) -> None:
    cwd = readme_example(tmp_path)
    proc = docs_cli(cwd, "readme_example:app", "--out", "asyncapi.json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((cwd / "asyncapi.json").read_text())
    check(doc, asyncapi_validator)
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["title"] == "feature_worker"
    assert doc["servers"] == {
        "kafka": {"host": "localhost:9092", "protocol": "kafka"},
        "redis": {"host": "localhost:6379", "protocol": "redis", "pathname": "/0"},
    }
    channels = doc["channels"]
    assert {k: c["address"] for k, c in channels.items()} == {
        "raw_events": "events.raw.v1", "features": "features.v1", "alerts": "alerts",
        "events.raw.v1.dlq": "events.raw.v1.dlq",
    }
    assert channels["alerts"]["servers"] == [{"$ref": "#/servers/redis"}]
    assert channels["raw_events"]["servers"] == [{"$ref": "#/servers/kafka"}]
    assert list(channels["raw_events"]["messages"]) == ["RawEvent"]
    assert list(channels["events.raw.v1.dlq"]["messages"]) == ["DeadLetter"]
    ops = doc["operations"]
    assert {k: (o["action"], o["channel"]["$ref"]) for k, o in ops.items()} == {
        "featurize": ("receive", "#/channels/raw_events"),
        "featurize.send.features": ("send", "#/channels/features"),
        "featurize.send.alerts": ("send", "#/channels/alerts"),
        "featurize.dead_letter": ("send", "#/channels/events.raw.v1.dlq"),
    }
    assert ops["featurize"]["bindings"]["kafka"]["groupId"]["enum"] == ["feature_worker"]
    schemas = doc["components"]["schemas"]
    assert schemas["RawEvent"]["properties"] == {"user": {"type": "string"},
                                                 "value": {"type": "number"}}
    assert schemas["RawEvent"]["required"] == ["user", "value"]
    assert "x-error-type" in doc["components"]["messages"]["DeadLetter"]["headers"]["properties"]


def test_readme_app_as_yaml_on_stdout(tmp_path: Path,
                                      asyncapi_validator: jsonschema.Draft7Validator) -> None:
    cwd = readme_example(tmp_path)
    proc = docs_cli(cwd, "readme_example:app")
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    check(doc, asyncapi_validator)
    proc = docs_cli(cwd, "readme_example:app", "--out", "api.yaml")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((cwd / "api.yaml").read_text()) == doc


# -- the demo pipeline ---------------------------------------------------------------------


def demo_pipeline() -> Pipeline:
    """The demo's engine pipeline (mlops_async.demo.run_engine_demo) declared as a Pipeline:
    train reads features and writes models and status; evaluate reads models."""
    pipeline = Pipeline("demo", url="memory://demo")
    pipeline.queue("features", value="edemo.features")
    pipeline.queue("models", value="edemo.models")
    pipeline.queue("status", value="edemo.status")

    @pipeline.stage(input="features", outputs=["models", "status"])
    async def train(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]] | None:
        return None

    @pipeline.stage(input="models", outputs=["status"], dead_letter="models.failed")
    async def evaluate(model: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return []

    return pipeline


def test_demo_pipeline_document(asyncapi_validator: jsonschema.Draft7Validator) -> None:
    doc = asyncapi_document(demo_pipeline())
    check(doc, asyncapi_validator)
    assert doc["servers"] == {"memory": {
        "host": "demo", "protocol": "memory",
        "description": "the in-process bus (one Python process)"}}
    assert {k: c["address"] for k, c in doc["channels"].items()} == {
        "features": "edemo.features", "models": "edemo.models", "status": "edemo.status",
        "edemo.features.dlq": "edemo.features.dlq", "models.failed": "models.failed",
    }
    ops = doc["operations"]
    assert sorted(ops) == ["evaluate", "evaluate.dead_letter", "evaluate.send.status", "train",
                           "train.dead_letter", "train.send.models", "train.send.status"]
    assert "demo.train" in ops["train"]["description"]  # each stage is its own group
    assert "bindings" not in ops["train"]  # Kafka bindings only for Kafka servers
    assert ops["evaluate.dead_letter"]["channel"] == {"$ref": "#/channels/models.failed"}


def test_pipeline_with_params_through_the_cli(
    tmp_path: Path, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    # tests.pipeline_app has a stage with typed parameters; none are needed for the document.
    out = tmp_path / "pipe.json"
    proc = docs_cli(ROOT, "tests.pipeline_app:pipeline", "--out", str(out),
                    "--url", "kafka://broker-1:9092,broker-2:9092")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    check(doc, asyncapi_validator)
    assert doc["servers"]["kafka"]["host"] == "broker-1:9092,broker-2:9092"
    assert doc["channels"]["in"]["address"] == "pipe.in"
    assert doc["operations"]["work"]["bindings"]["kafka"]["groupId"]["enum"] == [
        "replicas.work"]


# -- schemas, servers and errors -------------------------------------------------------------


class Scored(msgspec.Struct):
    """A prediction with the embedding it was made from."""

    user: str
    embedding: npt.NDArray[np.float32]
    window: tuple[int, float]
    raw: bytes | None = None


def test_array_fields_and_tuples_are_described(
    asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    app = App("scorer", url="redis://localhost:6379/0")
    app.queue("scores", schema=f"{__name__}:Scored")

    @app.handler(input="scores")
    async def handle(s: Scored) -> None:
        return None

    doc = asyncapi_document(app)
    check(doc, asyncapi_validator)
    props = doc["components"]["schemas"]["Scored"]["properties"]
    assert props["embedding"]["title"] == "ndarray"
    assert props["embedding"]["required"] == ["__ndarray__", "dtype", "shape"]
    # draft-07 tuple form (AsyncAPI schemas are draft-07), not 2020-12 prefixItems
    assert props["window"]["items"] == [{"type": "integer"}, {"type": "number"}]
    assert "prefixItems" not in json.dumps(doc)


def test_servers_never_show_credentials(asyncapi_validator: jsonschema.Draft7Validator) -> None:
    app = App("secret", url="kafka://alice:s3cr3t@broker:9093?sasl_plain_password=hunter2")

    @app.handler(input="in")
    async def handle(m: MLOpsMessage) -> None:
        return None

    doc = asyncapi_document(app)
    check(doc, asyncapi_validator)
    text = render(doc, "yaml") + render(doc, "json")
    assert "s3cr3t" not in text and "hunter2" not in text and "alice" not in text
    assert doc["servers"]["kafka"]["host"] == "broker:9093"


def test_url_comes_from_the_environment_or_is_left_out(
    monkeypatch: pytest.MonkeyPatch, asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    app = App("nourl")

    @app.handler(input="in", outputs=["out"])
    async def handle(m: MLOpsMessage) -> None:
        return None

    monkeypatch.delenv("MLOPS_BUS_URL", raising=False)
    doc = asyncapi_document(app)
    check(doc, asyncapi_validator)
    assert "servers" not in doc  # chosen at run time
    monkeypatch.setenv("MLOPS_BUS_URL", "redis://cache:6379/2")
    doc = asyncapi_document(app)
    check(doc, asyncapi_validator)
    assert doc["servers"]["redis"] == {"host": "cache:6379", "protocol": "redis",
                                       "pathname": "/2"}


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="neither an App nor a Pipeline"):
        asyncapi_document(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown document format"):
        render({}, "toml")
    app = App("bad")
    app.queue("in", schema="no.such.module:Thing")

    @app.handler(input="in")
    async def handle(m: MLOpsMessage) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"no\.such\.module"):
        asyncapi_document(app)
    assert main(["docs", "mlops_async.message:new_id"]) == 2
    assert "neither an App nor a Pipeline" in capsys.readouterr().err
    assert main(["docs", "tests.pipeline_app:pipeline", "--out",
                 str(tmp_path / "missing" / "x.json")]) == 2
    assert "cannot write" in capsys.readouterr().err
