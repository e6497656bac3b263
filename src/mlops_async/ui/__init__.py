"""``mlops-async ui``: a live web page of a pipeline: its graph, rates, replicas and dead letters.

Start it from the command line (``mlops-async ui --url redis://... module:pipeline``)
or next to a pipeline in the same process (the in-memory bus lives there)::

    server = await serve_ui("memory://", pipeline, port=8080)
    ...
    await server.close()
"""

from __future__ import annotations

from .server import UIServer, serve_ui
from .snapshot import Watch

__all__ = ["UIServer", "Watch", "serve_ui"]
