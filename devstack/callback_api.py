"""The `@connections` callback API, answering as API Gateway does.

POST sends the body as one text frame, GET describes the connection, DELETE closes it; an
unknown or closed id answers 410 GoneException, so the app's real boto3 code handles it.

It shares the public port, so like API Gateway it requires a SigV4 signature: made with the
credentials the local stack mints at each start (embedded_aws.py), which only its own process
(the app's boto3 clients) holds. Anything else is refused with 403 before the id is looked at.

The app's own calls take a shorter road: it runs in this process, so its boto3 request (built,
signed and its answer parsed by botocore as always) is answered in-process (`install_loopback`,
a `before-send` hook like moto's) by the same checks and actions, without a loopback HTTP
round trip through urllib3 and uvicorn: that hop cost about as much CPU as the app's
DynamoDB calls. Anyone else still comes over HTTP.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, AWSResponse
from botocore.credentials import Credentials
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.handlers import BUILTIN_HANDLERS
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devstack import faults
from devstack.connections import ConnectionRegistry, LocalConnection

log = logging.getLogger("devstack.callback")
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
    # The canonical request is rebuilt from the bytes on the wire (raw path, query, the signed
    # headers), so botocore's own canonicalisation gives the client's string to sign.
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    url = f"http://{request.headers.get('host', '')}{raw_path.decode('latin-1')}"
    if query:
        url += "?" + query.decode("latin-1")
    headers = {name: request.headers[name] for name in request.headers}
    return signature_valid(credentials, request.method, url, headers, body, now)


def signature_valid(credentials: Credentials, method: str, url: str, headers: Mapping[str, str], body: bytes,
                    now: float | None = None) -> bool:
    """Whether a request (`headers` by lower-case name, `host` included) carries a valid SigV4
    signature made with `credentials`."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if match is None or not hmac.compare_digest(match["key"], credentials.access_key):
        return False
    if credentials.token and not hmac.compare_digest(headers.get("x-amz-security-token", ""),
                                                     credentials.token):
        return False
    timestamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False
    if not timestamp.startswith(match["date"]) or abs((now or time.time()) - signed_at) > MAX_CLOCK_SKEW_SECONDS:
        return False
    names = match["signed"].split(";")
    if "host" not in names or any(name not in headers for name in names):
        return False
    rebuilt = AWSRequest(method=method, url=url, headers={n: headers[n] for n in names}, data=body)
    rebuilt.context["timestamp"] = timestamp
    signer = SigV4Auth(credentials, match["service"], match["region"])
    expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
    return hmac.compare_digest(expected, match["signature"])


async def act(registry: ConnectionRegistry, method: str, connection_id: str, data: bytes) -> Response:
    """What the callback API does with a signed request, on the server's event loop."""
    local = registry.get(connection_id)
    if local is None:
        return _error(410, "GoneException", f"connection {connection_id} is gone")
    return await _act_on(local, method, connection_id, data)


async def _act_on(local: LocalConnection, method: str, connection_id: str, data: bytes) -> Response:
    if method == "POST":
        if len(data) > MAX_PAYLOAD_BYTES:
            return _error(413, "PayloadTooLargeException", "payload too large")
        try:
            await local.send_text(data.decode("utf-8"))
        except Exception:  # the socket died under us: API Gateway would say gone
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        return Response(status_code=200)
    if method == "DELETE":
        await local.opened.wait()  # registered before its handshake ended: close it once open
        local.closing = True
        try:
            await local.websocket.close(code=1000)
        except Exception:  # the client's own close won the race: API Gateway would say gone
            log.info("connection %s closed through the callback API (gone already)", connection_id)
            return _error(410, "GoneException", f"connection {connection_id} is gone")
        log.info("connection %s closed through the callback API", connection_id)
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


def callback_routes(registry: ConnectionRegistry, credentials: Credentials | None) -> list[Route]:
    """`credentials`: the only ones whose signature is accepted (None: refuse everything)."""

    async def connection(request: Request) -> Response:
        data = await request.body()
        if credentials is None or not signed_by(credentials, request, data):
            return _error(403, "ForbiddenException", "Forbidden")
        return await act(registry, request.method, request.path_params["connection_id"], data)

    return [Route("/@connections/{connection_id}", connection, methods=["GET", "POST", "DELETE"])]


class _Body:
    """The raw body botocore reads an in-process answer from (as moto's stubber gives it)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


class Loopback:
    """Answers this process's boto3 calls to one local callback API without HTTP: the same
    signature check and actions as the HTTP route, run on the server's event loop."""

    def __init__(self, base_url: str, registry: ConnectionRegistry, credentials: Credentials | None,
                 timeout: float = 10.0) -> None:
        self.prefix = base_url.rstrip("/") + "/@connections/"
        self._registry = registry
        self._credentials = credentials
        self._timeout = timeout

    def answer(self, request: AWSPreparedRequest) -> AWSResponse | None:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes):
            return None  # a stream: let it go over HTTP
        parts = urlsplit(request.url)
        headers = {name.lower(): value.decode("latin-1") if isinstance(value, bytes) else str(value)
                   for name, value in request.headers.items()}
        headers.setdefault("host", parts.netloc)  # what botocore signed; urllib3 would add it
        method = request.method or "GET"
        if self._credentials is None or not signature_valid(self._credentials, method, request.url, headers, body):
            return self._response(request.url, _error(403, "ForbiddenException", "Forbidden"))
        connection_id = unquote(parts.path.rsplit("/@connections/", 1)[1])
        local = self._registry.get(connection_id)
        # the fault mode's spurious 410 (devstack/faults.py): a live connection said gone
        if local is None and method == "DELETE":
            log.info("connection %s closed through the callback API (gone already)", connection_id)
        if local is None or (method == "POST" and faults.gone(connection_id)):
            return self._response(request.url, _error(410, "GoneException", f"connection {connection_id} is gone"))
        if _running_loop() is local.loop:
            return None  # on the server's own loop (never, handlers run in threads): over HTTP
        if not local.loop.is_running():  # the server has stopped: as a refused connection
            raise EndpointConnectionError(endpoint_url=request.url)
        future = asyncio.run_coroutine_threadsafe(_act_on(local, method, connection_id, body), local.loop)
        try:
            answer = future.result(self._timeout)
        except FutureTimeout:
            future.cancel()
            raise ReadTimeoutError(endpoint_url=request.url) from None
        return self._response(request.url, answer)

    @staticmethod
    def _response(url: str, answer: Response) -> AWSResponse:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.raw_headers}
        return AWSResponse(url, answer.status_code, headers, _Body(bytes(answer.body)))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_loopbacks: dict[str, Loopback] = {}
_loopbacks_lock = threading.Lock()


def _before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
    for prefix, loopback in list(_loopbacks.items()):
        if request.url.startswith(prefix):
            return loopback.answer(request)
    return None


def install_loopback(base_url: str, registry: ConnectionRegistry, credentials: Credentials | None) -> None:
    """Answer calls to `base_url`'s callback API in-process, in every boto3 session created from
    now on (botocore's built-in handlers, where moto installs its own). Registered for the
    callback API's service only, so no other call pays for the check."""
    loopback = Loopback(base_url, registry, credentials)
    with _loopbacks_lock:
        if not any(entry[1] is _before_send for entry in BUILTIN_HANDLERS):
            BUILTIN_HANDLERS.append(("before-send.apigatewaymanagementapi", _before_send))
        _loopbacks[loopback.prefix] = loopback
