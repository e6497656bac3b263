"""A synchronous script blocked in a consumer call when Ctrl-C comes (run by test_sync.py).

``python -m tests.sync.interrupted URL TOPIC caught|uncaught``: queue 100 messages
(no flush), say "ready", block waiting on an empty topic. With ``caught`` the
KeyboardInterrupt is handled: the facade must still work, so the script reads the
100 messages back and prints how many; ``uncaught`` lets it end the interpreter,
whose exit closes the producer (the test then reads the topic itself).

``full``: URL is a broker that is away; send until the producer's small buffer is
full, printing "sent N" after each, so the script blocks in ``send``.
"""

from __future__ import annotations

import sys

from mlops_async import MessageBuilder, MessageType
from mlops_async.sync import Consumer, Producer


def fill_up(url: str, topic: str) -> None:
    producer = Producer(url, topic=topic, buffer_size=4, batch_size=2, flush_timeout=0.5,
                        close_timeout=1.0)
    print("ready", flush=True)
    for i in range(1000):
        producer.send(MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i)
                      .build())
        print(f"sent {i + 1}", flush=True)


def main(url: str, topic: str, mode: str) -> None:
    if mode == "full":
        fill_up(url, topic)
        return
    producer = Producer(url, topic=topic)
    for i in range(100):
        producer.send(MessageBuilder().with_msg_type(MessageType.DATA).with_argument("i", i)
                      .build())
    waiting = Consumer(url, topic=f"{topic}.empty", group="waiting")
    print("ready", flush=True)
    if mode == "uncaught":
        next(waiting)
        return
    try:
        next(waiting)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    producer.close()
    waiting.close()
    seen: set[int] = set()
    with Consumer(url, topic=topic, group="check", auto_offset_reset="earliest") as check:
        for _ in range(120):
            seen |= {m.additional_arguments["i"] for m in check.get_messages(timeout=0.5)}
            if len(seen) == 100:
                break
    print(f"read {len(seen)}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
