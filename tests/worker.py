"""A consumer process for multi-process tests: records every message it finished.

usage: python -m tests.worker URL TOPIC GROUP OUTFILE [DELAY_SECONDS] [OPTIONS_JSON]
Writes one line per processed message (its "i" argument), flushed before the
next message is asked for, so a SIGKILL never loses a line for a message that
was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mlops_async import Consumer


async def main(
    url: str, topic: str, group: str, out: str, delay: float, opts: dict[str, object]
) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    async with Consumer(url, topic=topic, group=group, auto_offset_reset="earliest", **opts) as c:  # type: ignore[arg-type]
        os.write(fd, b"ready\n")
        async for msg in c:
            if delay:
                await asyncio.sleep(delay)
            os.write(fd, f"{msg.additional_arguments['i']}\n".encode())
            if msg.additional_arguments.get("last"):
                break


if __name__ == "__main__":
    url, topic, group, out = sys.argv[1:5]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    opts = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    asyncio.run(main(url, topic, group, out, delay, opts))
