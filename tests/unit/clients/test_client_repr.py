"""A client's repr says where it goes: the URL (password hidden), its topic(s), its state."""

from __future__ import annotations

from mlops_async import Consumer, Producer


async def test_producer_repr_shows_the_redacted_url_and_topic() -> None:
    p = Producer("redis://app:s3cret@localhost:6379/0", topic="train")
    text = repr(p)
    assert "redis://app:***@localhost:6379/0" in text and "'train'" in text
    assert "s3cret" not in text and "not started" in text


async def test_consumer_repr_shows_url_topics_group_and_state() -> None:
    async with Consumer("memory://repr", topic=["a", "b"], group="g") as c:
        text = repr(c)
        assert "memory://repr" in text and "['a', 'b']" in text and "group='g'" in text
        assert "started" in text and "not started" not in text
    assert "closed" in repr(c)


async def test_a_client_without_a_url_says_where_it_would_look() -> None:
    assert "MLOPS_BUS_URL" in repr(Producer(topic="t", backend=None))
