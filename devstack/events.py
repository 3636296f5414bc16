"""Event converter: builds the Lambda events API Gateway and SQS would send.

Only the shapes live here; who invokes what is in `invoker.py`.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chalice.local import LambdaEventConverter

API_ID = "localwebim"
REGION = "us-east-1"


def new_connection_id() -> str:
    """Fresh, URL-safe (no `/` or `+`), like API Gateway's 16-character ids."""
    return secrets.token_urlsafe(12)


@dataclass
class WebSocketPeer:
    """What API Gateway knows about a WebSocket client when it connects."""

    connection_id: str
    domain_name: str
    stage: str
    source_ip: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    connected_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def _request_context(peer: WebSocketPeer, route_key: str, event_type: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "messageDirection": "IN",
        "stage": peer.stage,
        "domainName": peer.domain_name,
        "connectionId": peer.connection_id,
        "apiId": API_ID,
        "connectedAt": peer.connected_at_ms,
        "requestTimeEpoch": now_ms,
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
        "requestId": secrets.token_urlsafe(12),
        "extendedRequestId": secrets.token_urlsafe(12),
        "identity": {"sourceIp": peer.source_ip, "userAgent": peer.headers.get("user-agent", "")},
    }


def ws_connect_event(peer: WebSocketPeer) -> dict[str, Any]:
    single_query = {k: v[-1] for k, v in peer.query.items()} or None
    return {
        "requestContext": _request_context(peer, "$connect", "CONNECT"),
        "headers": dict(peer.headers),
        "multiValueHeaders": {k: [v] for k, v in peer.headers.items()},
        "queryStringParameters": single_query,
        "multiValueQueryStringParameters": dict(peer.query) or None,
        "isBase64Encoded": False,
    }


def ws_message_event(peer: WebSocketPeer, body: str) -> dict[str, Any]:
    context = _request_context(peer, "$default", "MESSAGE")
    context["messageId"] = secrets.token_urlsafe(12)
    return {"requestContext": context, "body": body, "isBase64Encoded": False}


def ws_disconnect_event(peer: WebSocketPeer, status_code: int, reason: str) -> dict[str, Any]:
    context = _request_context(peer, "$disconnect", "DISCONNECT")
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    return {
        "requestContext": context,
        "headers": dict(peer.headers),
        "multiValueHeaders": {k: [v] for k, v in peer.headers.items()},
        "isBase64Encoded": False,
    }


class RestEventConverter(LambdaEventConverter):
    """chalice's REST event converter, with the caller's address as
    `requestContext.identity.sourceIp` (chalice's says 127.0.0.1 for everyone). Requests are
    converted on their handler's thread, so each sets its address around the call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer = threading.local()

    @contextmanager
    def from_peer(self, source_ip: str | None) -> Iterator[None]:
        self._peer.ip = source_ip
        try:
            yield
        finally:
            self._peer.ip = None

    def create_lambda_event(self, method: str, path: str, headers: dict[str, str],
                            body: bytes | None = None) -> dict[str, Any]:
        event: dict[str, Any] = super().create_lambda_event(method, path, headers, body)
        event["requestContext"]["identity"]["sourceIp"] = getattr(self._peer, "ip", None) or self.LOCAL_SOURCE_IP
        return event


def sqs_event(queue_arn: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping sends for one batch of ReceiveMessage."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }
