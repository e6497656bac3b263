"""Kubernetes manifests for a Pipeline (or an App): ``mlops-async deploy k8s module:pipeline``.

One workload per stage, each pod running ``mlops-async run module:pipeline --stage S``:

- a ``Deployment`` with the stage's ``replicas`` for a pipeline that runs until
  stopped; a ``Job`` (``parallelism`` = ``completions`` = replicas) for a finite
  pipeline, whose stages exit 0 when their input ended, with one ``MLOPS_RUN_ID``
  for the whole run (a Deployment would start them again);
- the bus URL as ``MLOPS_BUS_URL`` (from a Secret when it carries a password),
  handed to ``run --url`` so it wins over a URL written in the code;
  ``MLOPS_REPLICAS``; the stage parameters set in the pipeline's config or on the
  command line as ``MLOPS_PARAM_<STAGE>_<NAME>`` (read by ``run --stage``);
- ``terminationGracePeriodSeconds`` = the app's ``drain_timeout`` plus a margin, so
  SIGTERM's drain (finish in-flight messages, flush, commit) ends before SIGKILL;
- ``/metrics`` on ``metrics_port`` with liveness (``/healthz``) and readiness
  (``/readyz``) probes and the usual Prometheus scrape annotations.

A stage whose replicas exceed its Kafka input topic's partitions gets a warning
(the extra replicas would idle); offline, the count is the one the queue
declares (``options: {partitions: N}``), see :mod:`.sizing`.

Nothing here connects to a broker or imports a driver.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .endpoint import redact
from .errors import ConfigurationError

__all__ = ["k8s_manifests", "render_manifests", "write_manifests"]

log = logging.getLogger("mlops_async.deploy")

_MANAGED_BY = "mlops-async"
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def _dns_label(*parts: str) -> str:
    """A DNS-1123 label (lowercase alphanumerics and '-', at most 63) made of ``parts``."""
    text = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts)
    text = re.sub(r"-+", "-", text).strip("-") or "stage"
    if len(text) > 63:  # keep it unique: a short hash of the whole name
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[:54].rstrip('-')}-{digest}"
    return text


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


def _env_value(stage: str, name: str, value: Any) -> str:
    """How ``run --stage`` reads a parameter back from the environment (lax conversion)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigurationError(
        f"parameter {name!r} of stage {stage!r} is a {type(value).__name__}: the "
        f"environment carries only strings, numbers and booleans; give it a default in "
        f"the params type instead"
    )


def _default_drain_timeout() -> float:
    from .app import App

    default = inspect.signature(App).parameters["drain_timeout"].default
    return float(default)


class _Workload(msgspec.Struct, frozen=True):
    """What one stage (or app) needs in its manifest."""

    name: str  # the stage name as the pipeline knows it
    replicas: int
    params: dict[str, str]
    stage_flag: bool  # ``--stage name`` on the command line (a Pipeline's stage)


def _workloads(target: Any, overrides: Mapping[str, Mapping[str, str]]) -> list[_Workload]:
    from .app import App
    from .pipeline import Pipeline

    if isinstance(target, App):
        if overrides:
            raise ConfigurationError("parameters belong to a Pipeline's stages, not to an App")
        return [_Workload(target.name, 1, {}, False)]
    if not isinstance(target, Pipeline):
        raise ConfigurationError(f"{target!r} is neither an App nor a Pipeline")
    if not target.stages:
        raise ConfigurationError(f"pipeline {target.name!r} has no stages")
    unknown = set(overrides) - set(target.stages)
    if unknown:
        raise ConfigurationError(
            f"pipeline {target.name!r} has no stage(s) {sorted(unknown)} "
            f"(stages: {list(target.stages)})"
        )
    out = []
    for name, stage in target.stages.items():
        given = {**target.config_params.get(name, {}), **overrides.get(name, {})}
        env: dict[str, str] = {}
        if stage.params_type is not None:
            # Checked as `run --stage` will check them: a missing required one fails here.
            params = target.params_for(name, dict(overrides.get(name, {})))
            for field in stage.params_type.__struct_fields__:
                if field in given:
                    env[f"MLOPS_PARAM_{_env_name(name)}_{_env_name(field)}"] = _env_value(
                        name, field, getattr(params, field))
        elif given:
            raise ConfigurationError(f"stage {name!r} takes no parameters: {sorted(given)}")
        out.append(_Workload(name, stage.replicas, env, True))
    return out


def _pod(target_path: str, w: _Workload, *, image: str, labels: dict[str, str],
         env: list[dict[str, Any]], grace: int, metrics_port: int | None,
         restart: str) -> dict[str, Any]:
    args = ["run", target_path, *(["--stage", w.name] if w.stage_flag else []),
            "--url", "$(MLOPS_BUS_URL)"]  # expanded by Kubernetes from the env below
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port), "--metrics-addr", "0.0.0.0"]
    container: dict[str, Any] = {
        "name": _dns_label(w.name),
        "image": image,
        "command": ["mlops-async"],
        "args": args,
        "env": [*env, {"name": "MLOPS_REPLICAS", "value": str(w.replicas)},
                *({"name": k, "value": v} for k, v in w.params.items())],
    }
    annotations: dict[str, str] = {}
    if metrics_port is not None:
        container["ports"] = [{"name": "metrics", "containerPort": metrics_port,
                               "protocol": "TCP"}]
        # Liveness: every pump and worker runs. Readiness: also connected and subscribed.
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3,
        }
        container["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5, "failureThreshold": 2,
        }
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port),
                       "prometheus.io/path": "/metrics"}
    return {
        "metadata": {"labels": labels, **({"annotations": annotations} if annotations else {})},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "restartPolicy": restart,
            "containers": [container],
        },
    }


def k8s_manifests(
    target: Any,
    target_path: str,
    *,
    image: str | None = None,
    namespace: str | None = None,
    url: str | None = None,
    url_secret: str | None = None,
    params: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    metrics_port: int | None = 9100,
    grace_margin: float = 10.0,
    run_id: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Kubernetes objects (dicts) that run ``target``, a Pipeline or an App.

    ``target_path`` is how the pods import it (``"module:pipeline"``); ``image``
    must contain that module (default: ``<name>:latest``). ``url`` is the bus URL
    (default: the pipeline's); a URL with a password must come from a Secret:
    ``url_secret="name"`` or ``"name:key"`` (key ``url`` by default). ``params``
    are stage parameters, ``{stage: {name: value}}``, on top of the pipeline's
    config; ``env`` adds variables to every pod (e.g. ``MLOPS_REDIS_URL`` for
    queues of another type). ``metrics_port=None`` leaves out /metrics and the
    probes. ``warn`` receives a message for each stage whose replicas exceed (or,
    its count being unknown, may exceed) its Kafka input topic's partitions
    (default: a WARNING on the ``mlops_async.deploy`` logger).

    Raises :class:`ConfigurationError` for a target that is neither, a missing or
    in-memory bus URL, a password in a plain URL, an unknown stage or parameter,
    or a required parameter that has no value.
    """
    from .app import App

    workloads = _workloads(target, params or {})
    name = str(target.name)
    bus = url if url is not None else getattr(target, "url", None)
    if url_secret is None:
        if not bus:
            raise ConfigurationError(
                f"{name}: no bus URL to deploy with: pass --url kafka://host:9092 (or give "
                f"the pipeline url=), or --url-secret for one kept in a Secret")
        if bus.startswith("memory://"):
            raise ConfigurationError(
                f"{name}: {bus} lives inside one process; pods need a broker (--url)")
        if redact(bus) != bus:
            raise ConfigurationError(
                f"{name}: the bus URL carries a password ({redact(bus)}): keep it in a "
                f"Secret and pass --url-secret NAME[:KEY]")
        bus_env: dict[str, Any] = {"name": "MLOPS_BUS_URL", "value": bus}
    else:
        secret, _, key = url_secret.partition(":")
        bus_env = {"name": "MLOPS_BUS_URL",
                   "valueFrom": {"secretKeyRef": {"name": secret, "key": key or "url"}}}
    if not isinstance(target, App):
        from .sizing import replica_warnings, stage_inputs

        for message in replica_warnings(stage_inputs(target, bus)):
            (warn or _log_warning)(message)
    extra = dict(env or {})
    for k in extra:
        if not _ENV_NAME.fullmatch(k):
            raise ConfigurationError(f"not an environment variable name: {k!r}")
    finite = bool(getattr(target, "finite", False))
    common_env: list[dict[str, Any]] = [bus_env, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if finite:  # every stage of one run shares its id: the ends it waits for are this run's
        common_env.append({"name": "MLOPS_RUN_ID", "value": run_id or uuid.uuid4().hex})
    common_env += [{"name": k, "value": v} for k, v in extra.items()]
    drain = (target.drain_timeout if isinstance(target, App)
             else float(target.app_options.get("drain_timeout", _default_drain_timeout())))
    grace = math.ceil(drain + grace_margin)
    part_of = _dns_label(name)
    docs: list[dict[str, Any]] = []
    for w in workloads:
        obj_name = _dns_label(name, w.name) if w.stage_flag else _dns_label(name)
        selector = {"app.kubernetes.io/name": part_of, "app.kubernetes.io/component": obj_name}
        labels = {**selector, "app.kubernetes.io/part-of": part_of,
                  "app.kubernetes.io/managed-by": _MANAGED_BY}
        metadata: dict[str, Any] = {"name": obj_name, "labels": labels}
        if namespace:
            metadata["namespace"] = namespace
        pod = _pod(target_path, w, image=image or f"{part_of}:latest", labels=labels,
                   env=common_env, grace=grace, metrics_port=metrics_port,
                   restart="OnFailure" if finite else "Always")
        if finite:
            docs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
                         "spec": {"parallelism": w.replicas, "completions": w.replicas,
                                  "backoffLimit": 6, "template": pod}})
        else:
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
                         "spec": {"replicas": w.replicas,
                                  "selector": {"matchLabels": selector},
                                  "template": pod}})
    return docs


def _log_warning(message: str) -> None:
    log.warning("%s", message)


def render_manifests(docs: Sequence[dict[str, Any]]) -> str:
    """``docs`` as one multi-document YAML text (``kubectl apply -f -`` reads it).

    Raises :class:`ConfigurationError` if PyYAML (the ``config`` extra) is missing.
    """
    try:
        return "---\n".join(msgspec.yaml.encode(d).decode() for d in docs)
    except ImportError as exc:
        raise ConfigurationError(
            f"YAML output needs PyYAML: pip install 'mlops-async[config]' ({exc})") from exc


def write_manifests(docs: Sequence[dict[str, Any]], out: str | Path) -> list[Path]:
    """Write one ``<name>.yaml`` per object into directory ``out`` (made if missing).

    Returns the files written; raises :class:`ConfigurationError` if it cannot write.
    """
    folder = Path(out)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for d in docs:
            path = folder / f"{d['metadata']['name']}.yaml"
            path.write_text(render_manifests([d]))
            written.append(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot write manifests to {folder}: {exc}") from exc
    return written
