from featurize import Feature, RawEvent, app

from mlops_async.testing import TestApp


async def test_featurize(bus_url: str | None = None) -> None:
    async with TestApp(app, url=bus_url) as t:
        await t.publish("raw_events", RawEvent("ann", 0.0))  # filtered out
        await t.publish("raw_events", RawEvent("bob", -1.0))  # rejected
        await t.publish("raw_events", RawEvent("cid", 2.0))
        assert await t.next("features", schema=Feature) == Feature("cid", 4.0)
        await t.drain()
        assert t.messages("features") == [{"user": "cid", "doubled": 4.0}]
        [letter] = t.dead_letters("raw_events")
        assert letter.error == "negative value"
