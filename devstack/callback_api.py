"""The `@connections` callback API, answering as API Gateway does.

POST sends the body as one text frame, GET describes the connection, DELETE closes it; an
unknown or closed id answers 410 GoneException, so the app's real boto3 code handles it.
"""
from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.connections import ConnectionRegistry

MAX_PAYLOAD_BYTES = 128 * 1024


def _error(status: int, error_type: str, message: str) -> Response:
    return Response(
        json.dumps({"message": message}),
        status_code=status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error_type},
    )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def callback_routes(registry: ConnectionRegistry) -> list[Route]:
    async def connection(request: Request) -> Response:
        connection_id = request.path_params["connection_id"]
        local = registry.get(connection_id)
        if local is None:
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        if request.method == "POST":
            data = await request.body()
            if len(data) > MAX_PAYLOAD_BYTES:
                return _error(413, "PayloadTooLargeException", "payload too large")
            try:
                await local.send_text(data.decode("utf-8"))
            except Exception:  # the socket died under us: API Gateway would say gone
                return _error(410, "GoneException", f"connection {connection_id} is gone")
            return Response(status_code=200)
        if request.method == "DELETE":
            local.closing = True
            await local.websocket.close(code=1000)
            return Response(status_code=204)
        info: dict[str, Any] = {
            "connectedAt": _iso(local.peer.connected_at_ms / 1000),
            "lastActiveAt": _iso(local.last_active_at),
            "identity": {
                "sourceIp": local.peer.source_ip,
                "userAgent": local.peer.headers.get("user-agent", ""),
            },
        }
        return Response(json.dumps(info), media_type="application/json")

    return [Route("/@connections/{connection_id}", connection, methods=["GET", "POST", "DELETE"])]
