"""Serves an ASGI app on a free port in a background thread, for in-process stack tests."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from devstack.server import MAX_MESSAGE_BYTES


@contextmanager
def serve_in_thread(asgi: Any, port: int) -> Iterator[str]:
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, ws="websockets-sansio",
                            ws_max_size=MAX_MESSAGE_BYTES, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
