"""Two members of one group share slow work: each holds about a second of it.

Run: python docs_src/work_sharing/two_members.py [URL]   (default: the in-process bus)
"""

import asyncio
import sys

from mlops_async import Consumer, MessageBuilder, MessageType, Producer


async def member(url: str, name: str, counts: dict[str, int], total: int,
                 done: asyncio.Event) -> None:
    # prefetch_window: hold about this many seconds of this loop's work (1.0 is the default).
    async with Consumer(url, topic="jobs", group="trainers", prefetch_window=1.0,
                        auto_offset_reset="earliest") as consumer:
        async for _job in consumer:
            await asyncio.sleep(0.3)  # a slow step: training, inference, a remote call
            counts[name] += 1
            if sum(counts.values()) == total:
                done.set()


async def main(url: str = "memory://work-sharing") -> dict[str, int]:
    total, counts, done = 8, {"a": 0, "b": 0}, asyncio.Event()
    members = [asyncio.create_task(member(url, name, counts, total, done)) for name in counts]
    await asyncio.sleep(0.2)  # both joined
    async with Producer(url, topic="jobs") as producer:
        for i in range(total):
            job = MessageBuilder().with_msg_type(MessageType.DATA).with_user_msg(f"job {i}")
            await producer.send(job.build())
    await done.wait()
    for task in members:
        task.cancel()
    await asyncio.gather(*members, return_exceptions=True)
    return counts


if __name__ == "__main__":
    counts = asyncio.run(main(*sys.argv[1:2]))
    print("handled per member:", counts)  # 4 or so each, never 8 and 0
