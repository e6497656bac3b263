"""PostgreSQL credentials against a server of our own that checks passwords (SCRAM).

The suite's shared server trusts every login, so a wrong password could not
fail there; this one is started with ``initdb --auth-host=scram-sha-256``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from mlops_async import AuthenticationError, BusUnavailable, Consumer, Producer, PublishError

from ..brokers import Server, _pg_bindir, free_port
from ..conftest import make_msg

SECRET = "pg:s3cret@Pa55"
QUOTED = "pg%3As3cret%40Pa55"


@pytest.fixture(scope="module")
def locked() -> Iterator[Server]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("no PostgreSQL binaries (apt-get install postgresql)")
    workdir = tempfile.mkdtemp(prefix="pg-auth-")
    data = os.path.join(workdir, "data")
    pwfile = os.path.join(workdir, "pw")
    with open(pwfile, "w") as f:
        f.write(SECRET + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        for path in (workdir, pwfile):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres",
                    "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    port = free_port()
    server = Server([*as_user, os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
                     "-k", workdir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                    port, os.path.join(workdir, "postgres.log"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url(server: Server, password: str, user: str = "postgres") -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{server.port}/postgres"


def _texts(exc: BaseException) -> list[str]:
    out: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        out += [str(cause), repr(cause)]
        cause = cause.__cause__
    return out


async def test_the_right_password_works_and_never_shows(
    locked: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    u = url(locked, QUOTED)
    async with Producer(u, topic="auth", strict=True) as p, Consumer(
        u, topic="auth", group="g", auto_offset_reset="earliest"
    ) as c:
        await p.send(make_msg(1), flush=True)
        async with asyncio.timeout(10):
            got = []
            while not got:
                got = await c.get_messages(timeout=0.2)
        reprs = [repr(p.backend), repr(c.backend)]
    for text in [*reprs, caplog.text]:
        assert SECRET not in text and QUOTED not in text, text


@pytest.mark.parametrize("user", ["postgres", "nobody"])
async def test_refused_credentials_are_an_authentication_error_not_an_outage(
    locked: Server, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = url(locked, "not-the-password", user)
    producer: Producer = Producer(wrong, topic="auth", strict=True)
    with pytest.raises(AuthenticationError) as info:
        await producer.start()
    assert not info.value.retriable and not isinstance(info.value, BusUnavailable)
    texts = [*_texts(info.value), repr(producer.backend)]
    await producer.close()
    # Lenient: the start does not crash the pipeline, nothing is retried forever,
    # the records are refused and flush() says why; one ERROR from the producer.
    async with asyncio.timeout(60):
        lenient: Producer = Producer(wrong, topic="auth", flush_timeout=30)
        await lenient.start()
        for i in range(3):
            await lenient.send(make_msg(i))
        with pytest.raises(PublishError) as refused:
            await lenient.flush()
        assert isinstance(refused.value.__cause__, AuthenticationError)
        assert not lenient.stats()["outage"]
        await lenient.close()
        consumer: Consumer = Consumer(wrong, topic="auth", group="g")
        with pytest.raises(AuthenticationError):
            async for _ in consumer:
                pass
        await consumer.close()
    ours = [r for r in caplog.records
            if r.name.startswith("mlops_async.producer") and r.levelno >= logging.ERROR]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    for text in [*texts, caplog.text]:
        assert "not-the-password" not in text and SECRET not in text, text
