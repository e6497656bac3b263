"""Watch a pipeline that runs in this process: the in-memory bus lives here, so the page must too.

    python docs_src/ui/watch_in_process.py [--port 8080] [--records 100000]

then open the address it prints. The run is finite: the page shows each stage end.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mlops_async import MessageBuilder, MessageType, MLOpsMessage, Pipeline
from mlops_async.ui import serve_ui

URL = "memory://shop"


def make_pipeline(records: int) -> Pipeline:
    # heartbeat: seconds between each replica's stats (what the page reads); 5 by default.
    pipeline = Pipeline("shop", url=URL, app_options={"heartbeat": 1.0})

    @pipeline.stage(outputs=["orders"])
    async def take_orders() -> Any:
        for i in range(records):
            yield "orders", (MessageBuilder().with_msg_type(MessageType.DATA)
                             .with_argument("order", i).build())

    @pipeline.stage(input="orders", outputs=["invoices"], replicas=2)
    async def bill(msg: MLOpsMessage) -> list[tuple[str, MLOpsMessage]]:
        return [("invoices", msg)]

    @pipeline.stage(input="invoices")
    async def archive(msg: MLOpsMessage) -> None:
        return None

    return pipeline


async def main(port: int, records: int) -> None:
    pipeline = make_pipeline(records)
    server = await serve_ui(URL, pipeline, port=port)  # port=0: any free port
    print(f"watch it at {server.address}", flush=True)
    try:
        await pipeline.run()  # returns once every stage ended
    finally:
        await server.close()


if __name__ == "__main__":
    args = argparse.ArgumentParser()
    args.add_argument("--port", type=int, default=8080)
    args.add_argument("--records", type=int, default=100_000)
    ns = args.parse_args()
    asyncio.run(main(ns.port, ns.records))
