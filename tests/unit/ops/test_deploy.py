"""`mlops-async deploy k8s`: manifests checked against the Kubernetes schemas (offline)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest

from mlops_async import App, ConfigurationError, MLOpsMessage, Pipeline
from mlops_async.cli import main
from mlops_async.deploy import k8s_manifests, render_manifests

TARGET = "tests.unit.ops.test_deploy:pipeline"
# The oldest and the newest schemas the package ships that we promise to fit.
K8S_VERSIONS = ("1.28.0", "1.37.0")


class TrainParams(msgspec.Struct):
    model_dir: str                # required
    lr: float = 0.01
    warm: bool = False
    layers: list[int] = msgspec.field(default_factory=lambda: [64])


pipeline = Pipeline("Churn_Model", url="kafka://kafka:9092",
                    params={"train": {"model_dir": "/models"}},
                    app_options={"drain_timeout": 45.5})


@pipeline.stage(input="features", outputs=["models"])
async def featurize(msg: MLOpsMessage) -> None: ...


@pipeline.stage(input="models", params=TrainParams, replicas=3)
async def train(msg: MLOpsMessage, params: TrainParams) -> None: ...


finite = Pipeline("nightly", url="redis://redis:6379/0")


@finite.stage(outputs=["rows"])
async def read_rows() -> AsyncIterator[tuple[str, MLOpsMessage]]:
    if False:
        yield ("rows", MLOpsMessage(id="x", created_at=0.0, msg_type="DATA"))


@finite.stage(input="rows", replicas=2)
async def score(msg: MLOpsMessage) -> None: ...


app = App("solo-worker", url="kafka://kafka:9092", drain_timeout=5)


@app.handler(input="raw")
async def handle(msg: MLOpsMessage) -> None: ...


def valid(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def env_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(doc)["env"]}


def test_a_deployment_per_stage_with_replicas_env_and_grace_period() -> None:
    docs = k8s_manifests(pipeline, TARGET, image="registry.local/churn:1.2",
                         namespace="ml", params={"train": {"lr": "0.2", "warm": "1"}})
    valid(docs)
    assert [(d["kind"], d["metadata"]["name"], d["spec"]["replicas"]) for d in docs] == [
        ("Deployment", "churn-model-featurize", 1), ("Deployment", "churn-model-train", 3)]
    feat, train_ = docs
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    c = container(train_)
    assert c["image"] == "registry.local/churn:1.2"
    assert [*c["command"], *c["args"]] == [
        "mlops-async", "run", TARGET, "--stage", "train", "--url", "$(MLOPS_BUS_URL)",
        "--metrics-port", "9100", "--metrics-addr", "0.0.0.0"]
    env = env_of(train_)
    assert env["MLOPS_BUS_URL"] == "kafka://kafka:9092" and env["MLOPS_REPLICAS"] == "3"
    # Config and command line, typed and checked, as `run --stage` reads them back.
    assert {k: v for k, v in env.items() if k.startswith("MLOPS_PARAM_")} == {
        "MLOPS_PARAM_TRAIN_MODEL_DIR": "/models", "MLOPS_PARAM_TRAIN_LR": "0.2",
        "MLOPS_PARAM_TRAIN_WARM": "true"}
    assert not any(k.startswith("MLOPS_PARAM_") for k in env_of(feat))
    spec = train_["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 56  # drain_timeout 45.5 + 10, rounded up
    assert spec["restartPolicy"] == "Always"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    selector = train_["spec"]["selector"]["matchLabels"]
    assert selector.items() <= train_["spec"]["template"]["metadata"]["labels"].items()
    assert selector != feat["spec"]["selector"]["matchLabels"]  # each stage its own pods


def test_the_parameters_in_the_manifest_are_what_the_stage_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    (_, train_) = k8s_manifests(pipeline, TARGET, params={"train": {"warm": "1"}})
    for key, value in env_of(train_).items():
        if key.startswith("MLOPS_PARAM_"):
            monkeypatch.setenv(key, value)
    bare = Pipeline("Churn_Model")  # no config: the env alone carries them
    bare.stages = pipeline.stages
    assert bare.params_for("train") == TrainParams(model_dir="/models", warm=True)


def test_a_finite_pipeline_gets_jobs_sharing_one_run_id() -> None:
    docs = k8s_manifests(finite, "tests.unit.ops.test_deploy:finite")
    valid(docs)
    assert [(d["kind"], d["spec"]["parallelism"], d["spec"]["completions"]) for d in docs] == [
        ("Job", 1, 1), ("Job", 2, 2)]
    runs = {env_of(d)["MLOPS_RUN_ID"] for d in docs}
    assert len(runs) == 1 and len(runs.pop()) == 32
    assert all(d["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure" for d in docs)
    assert env_of(docs[1])["MLOPS_REPLICAS"] == "2"


def test_an_app_is_one_deployment() -> None:
    (doc,) = k8s_manifests(app, "tests.unit.ops.test_deploy:app", metrics_port=None)
    valid([doc])
    assert doc["metadata"]["name"] == "solo-worker" and doc["spec"]["replicas"] == 1
    assert container(doc)["args"] == ["run", "tests.unit.ops.test_deploy:app", "--url",
                                      "$(MLOPS_BUS_URL)"]
    assert "livenessProbe" not in container(doc)
    assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 15


def test_a_url_with_a_password_comes_from_a_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"password.*u:\*\*\*@.*--url-secret"):
        k8s_manifests(pipeline, TARGET, url="kafka://u:hunter2@kafka:9093")
    docs = k8s_manifests(pipeline, TARGET, url_secret="bus-creds", env={"MLOPS_REDIS_URL": "x"})
    valid(docs)
    env = env_of(docs[0])
    assert env["MLOPS_BUS_URL"] == {"secretKeyRef": {"name": "bus-creds", "key": "url"}}
    assert env["MLOPS_REDIS_URL"] == "x"
    assert "hunter2" not in render_manifests(docs)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"url": "memory://x"}, "inside one process"),
    ({"params": {"nope": {"a": "1"}}}, r"no stage\(s\) \['nope'\]"),
    ({"params": {"train": {"epochs": "1"}}}, "has no parameter 'epochs'"),
    ({"params": {"featurize": {"a": "1"}}}, "takes no parameters"),
    ({"params": {"train": {"lr": "fast"}}}, "parameters of stage 'train'"),
    ({"env": {"BAD NAME": "1"}}, "not an environment variable name"),
])
def test_bad_deployments_are_refused_by_name(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        k8s_manifests(pipeline, TARGET, **kwargs)


def test_what_the_environment_cannot_carry_is_refused() -> None:
    p = Pipeline("p", url="kafka://k:9092", params={"train": {"model_dir": "/m", "layers": [1]}})
    p.stages = pipeline.stages
    with pytest.raises(ConfigurationError, match=r"'layers'.*list"):
        k8s_manifests(p, "x:p")
    none = Pipeline("p", url="kafka://k:9092")
    none.stages = pipeline.stages
    with pytest.raises(ConfigurationError, match="model_dir"):  # required, never given
        k8s_manifests(none, "x:p")
    with pytest.raises(ConfigurationError, match="has no stages"):
        k8s_manifests(Pipeline("q", url="kafka://k:9092"), "x:q")
    no_url = Pipeline("q")
    no_url.stages = {"featurize": pipeline.stages["featurize"]}
    with pytest.raises(ConfigurationError, match="no bus URL"):
        k8s_manifests(no_url, "x:q")


def test_long_names_stay_valid_labels() -> None:
    long = Pipeline("A" * 50 + "_pipeline", url="kafka://k:9092")
    long.stage(input="in", name="stage_" + "b" * 60)(featurize)
    long.stage(input="in", name="stage_" + "b" * 60 + "2")(featurize)
    docs = k8s_manifests(long, "x:long")
    valid(docs)
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 for n in names) and len(set(names)) == 2


def test_the_command_writes_a_stream_or_a_file_per_stage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "k8s", TARGET, "--image", "img:1", "--param", "train.lr=0.5"]) == 0
    docs = [msgspec.yaml.decode(part) for part in capsys.readouterr().out.split("---\n")]
    valid(docs)
    assert env_of(docs[1])["MLOPS_PARAM_TRAIN_LR"] == "0.5"
    out = tmp_path / "k8s"
    assert main(["deploy", "k8s", TARGET, "--out", str(out), "--namespace", "ml",
                 "--metrics-port", "0"]) == 0
    files = sorted(os.listdir(out))
    assert files == ["churn-model-featurize.yaml", "churn-model-train.yaml"]
    written = msgspec.yaml.decode((out / files[1]).read_bytes())
    valid([written])
    assert "ports" not in container(written)
    assert main(["deploy", "k8s", TARGET, "--param", "lr=0.5"]) == 2
    assert "STAGE.NAME=VALUE" in capsys.readouterr().err
