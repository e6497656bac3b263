"""Integration tests on real brokers with the plugin's fixtures (nothing to configure)."""

from mlops_async import Consumer, MessageBuilder, MessageType, Producer


async def roundtrip(url: str) -> None:
    async with Producer(url, topic="t") as p, Consumer(
            url, topic="t", group="g", auto_offset_reset="earliest") as c:
        msg = MessageBuilder().with_msg_type(MessageType.DATA).with_user_msg("hi").build()
        await p.send(msg, flush=True)
        got = []
        for _ in range(100):
            got += await c.get_messages(timeout=0.5)
            if got:
                break
        assert [m.user_message for m in got] == ["hi"]


async def test_on_a_private_memory_bus(memory_bus: str) -> None:
    await roundtrip(memory_bus)  # memory://test-...: this test's alone


async def test_on_redis(redis_server: str) -> None:
    await roundtrip(redis_server)  # redis://127.0.0.1:<port>/0, one server per session


async def test_on_kafka(kafka_broker: str) -> None:
    await roundtrip(kafka_broker)  # kafka://127.0.0.1:<port>, Tansu, one per session
