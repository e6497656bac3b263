"""Credentials against a real redis-server that requires them: used, refused, never shown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis.asyncio as redis_py

from mlops_async import AuthenticationError, Consumer, Producer, PublishError

from ..brokers import Server, redis_server
from ..conftest import make_msg

pytestmark = pytest.mark.redis
SECRET = "s3cret-Pa55"


@pytest.fixture(scope="module")
def locked() -> Iterator[Server]:
    server = redis_server()
    server.argv += ["--requirepass", SECRET]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def url(server: Server, userinfo: str) -> str:
    return f"redis://{userinfo}@127.0.0.1:{server.port}/0"


async def test_the_right_password_works_and_never_shows(
    locked: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    u = url(locked, f":{SECRET}")
    async with Producer(u, topic="auth") as p, Consumer(u, topic="auth",
                                                          auto_offset_reset="earliest") as c:
        await p.send(make_msg(1), flush=True)
        async with asyncio.timeout(10):
            got = []
            while not got:
                got = await c.get_messages(timeout=0.2)
        assert SECRET not in repr(p.backend) and SECRET not in repr(c.backend)
    assert SECRET not in caplog.text


async def test_acl_user_and_password(locked: Server) -> None:
    admin = redis_py.Redis(port=locked.port, password=SECRET)
    await admin.execute_command("ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "&*", "+@all")
    await admin.aclose()
    async with Producer(url(locked, "alice:alice-pw"), topic="acl", strict=True) as p:
        await p.send(make_msg(1), flush=True)


async def test_a_wrong_password_is_an_authentication_error_not_an_outage(
    locked: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = url(locked, ":not-the-password")
    with pytest.raises(AuthenticationError) as info:
        async with Producer(wrong, topic="auth", strict=True):
            pass
    assert not info.value.retriable
    # Lenient: one ERROR, no endless retry; what was sent is refused, and flush says so.
    async with asyncio.timeout(10):
        p: Producer = Producer(wrong, topic="auth", flush_timeout=30)
        await p.start()
        for i in range(3):
            await p.send(make_msg(i))
        with pytest.raises(PublishError) as refused:
            await p.flush()
        assert isinstance(refused.value.__cause__, AuthenticationError)
        await p.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "credentials" in errors[0].getMessage()
    assert not p.stats()["outage"]
    # A consumer cannot work without being let in: it says so at once, in any mode.
    with pytest.raises(AuthenticationError):
        async with Consumer(wrong, topic="auth", group="g"):
            pass
    assert "not-the-password" not in caplog.text and SECRET not in caplog.text
