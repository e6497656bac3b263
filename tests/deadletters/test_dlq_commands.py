"""`mlops-async dlq list/show/replay`: dead letters can be looked at, picked and replayed.

Before: no way to list or show a letter, `replay` sent every letter back (a
``Reject``ed one too), and an unknown queue said "replayed 0" with exit 0.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlops_async import Codec, Consumer, DecodeError, Producer, Reject
from mlops_async.backends import Delivery
from mlops_async.cli import main
from mlops_async.deadletter import dead_letter_record

from ..conftest import make_msg

pytestmark = pytest.mark.redis

ERRORS = [Reject("negative value"), DecodeError("not a valid MLOpsMessage"),
          TimeoutError("model server did not answer")]


async def _letters(url: str, source: str) -> None:
    """One dead letter per error above, for source records 0, 1, 2."""
    codec: Codec = Codec()
    records = [
        dead_letter_record(f"{source}.dlq", Delivery(source, 0, i, codec.encode(make_msg(i))), exc)
        for i, exc in enumerate(ERRORS)
    ]
    async with Producer(url, topic=f"{source}.dlq") as p:
        assert p.backend is not None
        await p.backend.publish(records)


async def _source_ids(url: str, source: str) -> list[int]:
    async with Consumer(url, topic=source, peek=True) as c:
        got = await c.get_messages(timeout=1)
    return sorted(m.additional_arguments["i"] for m in got)


@pytest.fixture
def source(redis_url: str) -> str:
    name = f"src-{uuid.uuid4().hex[:8]}"
    asyncio.run(_letters(redis_url, name))
    return name


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_list_shows_every_letter_with_its_id_and_error(
    redis_url: str, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "list", "--queue", f"{source}.dlq", "--url", redis_url]) == 0
    lines = _lines(capsys)
    assert len(lines) == 3
    assert all(line.startswith("0@") for line in lines)
    for line, kind in zip(lines, ("Reject", "DecodeError", "TimeoutError"), strict=True):
        assert kind in line and f"{source}[0]@" in line
    assert main(["dlq", "list", "--queue", f"{source}.dlq", "--url", redis_url,
                 "--error-type", "Reject"]) == 0
    [only] = _lines(capsys)
    assert "negative value" in only


def test_show_prints_one_letter_whole(
    redis_url: str, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["dlq", "list", "--queue", f"{source}.dlq", "--url", redis_url])
    first = _lines(capsys)[0].split()[0]
    assert main(["dlq", "show", "--queue", f"{source}.dlq", first, "--url", redis_url]) == 0
    out = capsys.readouterr().out
    assert "error_type: Reject" in out and "negative value" in out
    assert '"user_message":"record 0"' in out  # the original, readable
    assert main(["dlq", "show", "--queue", f"{source}.dlq", "0@nosuch", "--url",
                 redis_url]) == 2
    assert "no dead letter 0@nosuch" in capsys.readouterr().err


def test_replay_can_skip_an_error_type_and_passes_over_it_for_good(
    redis_url: str, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "replay", "--queue", f"{source}.dlq", "--url", redis_url,
                 "--skip-error-type", "Reject"]) == 0
    assert "replayed 2" in capsys.readouterr().out
    assert asyncio.run(_source_ids(redis_url, source)) == [1, 2]
    # The replay group passed over the Reject: a later replay sends nothing again.
    assert main(["dlq", "replay", "--queue", f"{source}.dlq", "--url", redis_url]) == 0
    assert "replayed 0" in capsys.readouterr().out


def test_replay_by_error_type_and_by_id(
    redis_url: str, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["dlq", "list", "--queue", f"{source}.dlq", "--url", redis_url])
    ids = [line.split()[0] for line in _lines(capsys)]
    assert main(["dlq", "replay", "--queue", f"{source}.dlq", "--url", redis_url,
                 "--id", ids[2]]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert asyncio.run(_source_ids(redis_url, source)) == [2]
    assert main(["dlq", "replay", "--queue", f"{source}.dlq", "--url", redis_url,
                 "--id", "0@nosuch"]) == 2
    assert "no dead letter 0@nosuch" in capsys.readouterr().err
    # By id reads without the group: a typed replay still finds its letters.
    assert main(["dlq", "replay", "--queue", f"{source}.dlq", "--url", redis_url,
                 "--error-type", "DecodeError"]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert asyncio.run(_source_ids(redis_url, source)) == [1, 2]
