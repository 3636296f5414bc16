"""The `@connections` callback API, answering as API Gateway does.

POST sends the body as one text frame, GET describes the connection, DELETE closes it; an
unknown or closed id answers 410 GoneException, so the app's real boto3 code handles it.

It shares the public port, so like API Gateway it requires a SigV4 signature: made with the
credentials the local stack mints at each start (embedded_aws.py), which only its own process
(the app's boto3 clients) holds. Anything else is refused with 403 before the id is looked at.
"""
from __future__ import annotations

import hmac
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack.connections import ConnectionRegistry

MAX_PAYLOAD_BYTES = 128 * 1024
MAX_CLOCK_SKEW_SECONDS = 15 * 60  # as AWS
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;._-]+), ?Signature=(?P<signature>[0-9a-f]{64})"
)


def _error(status: int, error_type: str, message: str) -> Response:
    return Response(
        json.dumps({"message": message}),
        status_code=status,
        media_type="application/json",
        headers={"x-amzn-ErrorType": error_type},
    )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def signed_by(credentials: Credentials, request: Request, body: bytes, now: float | None = None) -> bool:
    """Whether `request` carries a valid SigV4 signature made with `credentials`."""
    match = _AUTHORIZATION.fullmatch(request.headers.get("authorization", ""))
    if match is None or not hmac.compare_digest(match["key"], credentials.access_key):
        return False
    if credentials.token and not hmac.compare_digest(request.headers.get("x-amz-security-token", ""),
                                                     credentials.token):
        return False
    timestamp = request.headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False
    if not timestamp.startswith(match["date"]) or abs((now or time.time()) - signed_at) > MAX_CLOCK_SKEW_SECONDS:
        return False
    names = match["signed"].split(";")
    if "host" not in names or any(name not in request.headers for name in names):
        return False
    # The canonical request is rebuilt from the bytes on the wire (raw path, query, the signed
    # headers), so botocore's own canonicalisation gives the client's string to sign.
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    url = f"http://{request.headers['host']}{raw_path.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    rebuilt = AWSRequest(method=request.method, url=url, headers={n: request.headers[n] for n in names}, data=body)
    rebuilt.context["timestamp"] = timestamp
    signer = SigV4Auth(credentials, match["service"], match["region"])
    expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
    return hmac.compare_digest(expected, match["signature"])


def callback_routes(registry: ConnectionRegistry, credentials: Credentials | None) -> list[Route]:
    """`credentials`: the only ones whose signature is accepted (None: refuse everything)."""

    async def connection(request: Request) -> Response:
        data = await request.body()
        if credentials is None or not signed_by(credentials, request, data):
            return _error(403, "ForbiddenException", "Forbidden")
        return await _act(request, data)

    async def _act(request: Request, data: bytes) -> Response:
        connection_id = request.path_params["connection_id"]
        local = registry.get(connection_id)
        if local is None:
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        if request.method == "POST":
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
