"""Calls the Chalice app's handlers, unmodified, the way Lambda would.

A handler that raises is logged (as CloudWatch would show it) and reported as Lambda's
error; it never takes the local server down. So is one that dies (`faults.LambdaDeath`, the
fault mode's crash, which the app's `except Exception` cannot catch): a WebSocket frame then
gets no answer, a REST call API Gateway's 502 (its DEFAULT_5XX gateway response, as
infra/gateway_responses.py customises it on AWS: JSON, never uvicorn's plain-text 500), an SQS
batch stays for its visibility timeout. API Gateway's own REST answers (an unknown route) use
the same gateway responses.
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalice.app import Chalice, SQSEventConfig
from chalice.config import Config
from chalice.local import LambdaContext, LocalChalice, LocalGateway, LocalGatewayException, RouteMatcher

from devstack import faults
from devstack.events import RestEventConverter

log = logging.getLogger("devstack.lambda")
GATEWAY_RESPONSES_FILE = Path(__file__).resolve().parent.parent / "infra" / "gateway_responses.json"
GATEWAY_RESPONSES = json.loads(GATEWAY_RESPONSES_FILE.read_text())


def gateway_response(response_type: str, status: int) -> tuple[int, bytes]:
    """API Gateway's own answer of this type, as customised on AWS: its status and body."""
    spec = GATEWAY_RESPONSES.get(response_type) or GATEWAY_RESPONSES["DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"]
    body = {"error": {"code": spec["code"], "message": spec["message"]}}
    return int(spec.get("statusCode", status)), json.dumps(body).encode()


def batch_item_failures(response: Any, ids: list[str]) -> list[str] | None:
    """The failed message ids of an SQS handler's answer, by Lambda's rules for
    ReportBatchItemFailures: no answer, no `batchItemFailures` or an empty one is success; an
    identifier that is missing, empty or not in the batch, or an answer of another shape, is
    invalid (None: the whole batch fails)."""
    if response is None:
        return []
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    failed: list[str] = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in ids:
            return None
        failed.append(identifier)
    return failed


@dataclass(frozen=True)
class RestResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def thread_local_requests(app: Chalice) -> None:
    """chalice keeps `app.current_request` on the app object: right on Lambda (one event per
    container at a time), wrong here, where handlers run in parallel threads and one REST
    handler would read another's request (its body, its Authorization header: acting as someone
    else). `chalice local` makes it thread-local by turning the app into a LocalChalice; so do we."""
    if not isinstance(app, LocalChalice):
        app.__class__ = type("ThreadLocalChalice", (LocalChalice, type(app)), {})


class LambdaInvoker:
    def __init__(self, app: Chalice, stage: str = "local") -> None:
        thread_local_requests(app)
        self._app = app
        self._gateway = LocalGateway(app, Config.create(chalice_stage=stage, app_name=app.app_name))
        self._events = RestEventConverter(RouteMatcher(list(app.routes)), app.api.binary_types)
        self._gateway.event_converter = self._events  # the caller's address as sourceIp

    def _context(self, name: str) -> LambdaContext:
        return LambdaContext(function_name=f"{self._app.app_name}-local-{name}", memory_size=256,
                             max_runtime_ms=60_000)

    def websocket(self, route_key: str, event: dict[str, Any]) -> int:
        """Invoke the handler of `$connect`, `$default` or `$disconnect`; return its status."""
        config = self._app.websocket_handlers.get(route_key)
        if config is None:
            return 200 if route_key != "$default" else 404
        try:
            with faults.invocation():
                response = self._app.handler_map[config.name](event, self._context(config.name))
        except (Exception, faults.LambdaDeath):
            log.exception("%s handler failed", route_key)
            return 500
        return int((response or {}).get("statusCode", 200))

    def function(self, name: str, event: dict[str, Any]) -> Any:
        """Invoke a plain function (`@app.lambda_function(name=...)`), e.g. the wait API's
        authorizer, as API Gateway does; a crash or death raises (the caller answers 500)."""
        handler = self._app.handler_map[name]
        with faults.invocation():
            return handler(event, self._context(name))

    def sqs_handlers(self) -> list[SQSEventConfig]:
        return [s for s in self._app.event_sources if isinstance(s, SQSEventConfig)]

    def sqs(self, config: SQSEventConfig, event: dict[str, Any]) -> list[str]:
        """Invoke an SQS handler with one batch; the message ids that failed (the others are
        deleted), read as an event source mapping with ReportBatchItemFailures reads them."""
        ids = [record["messageId"] for record in event["Records"]]
        try:
            with faults.invocation():
                response = self._app.handler_map[config.name](event, self._context(config.name))
        except (Exception, faults.LambdaDeath):
            log.exception("SQS handler %s failed; the batch stays for redrive", config.name)
            return ids
        failed = batch_item_failures(response, ids)
        if failed is None:
            log.error("SQS handler %s answered an invalid batch response; the batch stays", config.name)
            return ids
        return failed

    def rest(self, method: str, path: str, headers: dict[str, str], body: bytes,
             source_ip: str | None = None) -> RestResponse:
        try:
            with self._events.from_peer(source_ip), faults.invocation():
                response = self._gateway.handle_request(method, path, headers, body or None)
        except LocalGatewayException as error:
            # chalice's local 403 "Missing Authentication Token": no route has this path
            kind = "MISSING_AUTHENTICATION_TOKEN" if error.CODE == 403 else "DEFAULT_4XX"
            status, shaped = gateway_response(kind, error.CODE)
            return RestResponse(status, {"Content-Type": "application/json"}, shaped)
        except (Exception, faults.LambdaDeath):
            # The function crashed (or died): API Gateway answers 502 itself, in its DEFAULT_5XX
            # gateway response (plain AWS: {"message": "Internal server error"}).
            log.exception("REST handler for %s %s failed", method, path)
            status, shaped = gateway_response("DEFAULT_5XX", 502)
            return RestResponse(status, {"Content-Type": "application/json"}, shaped)
        out_headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            out_headers[key] = ", ".join(str(v) for v in values)
        if not any(k.lower() == "content-type" for k in out_headers):
            out_headers["Content-Type"] = "application/json"  # API Gateway's default for a proxy answer
        raw = response.get("body") or b""
        if isinstance(raw, str):
            raw = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode("utf-8")
        return RestResponse(int(response["statusCode"]), out_headers, raw)
