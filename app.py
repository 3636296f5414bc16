"""Access layer: API Gateway WebSocket and REST handlers and the SQS handler.

Each handler parses its event, establishes who is calling and hands over to one service
call in chalicelib; nothing else happens here. Who is calling is decided in exactly one
place, `Authenticator.authenticate`: from the handshake's `token` query parameter on
WebSocket (browsers cannot set headers there), from `Authorization: Bearer` on REST, and
from the stored connection for every later frame.
"""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from chalice.app import Chalice, CloudWatchEvent, Rate, Request, Response, SQSEvent, WebsocketEvent

from chalicelib import observability
from chalicelib.errors import (
    BadRequestError,
    MalformedJsonError,
    MethodNotAllowedError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    WebimError,
)
from chalicelib.logic.frames import BanRequest, PollRequest, Release, parse_identities, refuse_lone_surrogates
from chalicelib.logic.jobs import QueuedJob
from chalicelib.logic.presence import MAX_BATCH
from chalicelib.principal import KINDS, Identity, valid_id
from chalicelib.settings import jobs_queue_name
from chalicelib.tracing import configure_tracing
from chalicelib.wiring import services

# app.log is Powertools' JSON logger `webim` (chalicelib/observability.py), not chalice's plain one
app = Chalice(app_name="webim", configure_logs=False)
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.websocket_api.session = boto3.session.Session()
app.api.cors = True
configure_tracing()

# Routes anyone may call; every other route requires a credential (tests enforce the list).
PUBLIC_ROUTES = {("GET", "/health"), ("POST", "/identity/visitor"), ("POST", "/identity/dev-login")}


@app.middleware("all")
def observed(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Every invocation: its log keys start fresh, and its metrics are printed when it ends."""
    context = getattr(event, "context", None) or getattr(event, "lambda_context", None)
    with observability.invocation(connection_id=getattr(event, "connection_id", None),
                                  request_id=getattr(context, "aws_request_id", None)):
        return get_response(event)


# -- WebSocket ---------------------------------------------------------------------------------
@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> Response | None:
    query = event.to_dict().get("queryStringParameters") or {}
    svc = services()
    try:
        identity = svc.authenticator.authenticate(query.get("token"))
        observability.bind(identity=identity.key)
        # refused (e.g. rate_limited: too many connections) or failed: nothing of it stays
        svc.sessions.open(event.connection_id, identity, svc.callback_endpoint(event.domain_name, event.stage))
    except WebimError as error:
        observability.handshake_refused(error.code, error.status)  # never the token itself
        return Response(body="", status_code=error.status, headers=retry_after_header(error))
    return None


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> None:
    try:
        svc = services()
        # the endpoint answers a connection that has no record (`connection_gone`, then closed)
        svc.sessions.receive(event.connection_id, event.body, svc.callback_endpoint(event.domain_name, event.stage))
    except UnauthorizedError as error:
        # A frame that raced its connection's $disconnect (a tab closing) finds no record: normal.
        observability.event("frame_refused", code=error.code)
    except WebimError as error:
        observability.event("frame_refused", logging.WARNING, code=error.code)


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> None:
    services().sessions.close(event.connection_id)


# -- REST ----------------------------------------------------------------------------------------
View = TypeVar("View", bound=Callable[..., Any])


def rest(view: View) -> View:
    """Errors become `{"error": {"code", "message"}}` with their status, never a trace.

    (A chalice middleware cannot do this: chalice turns a view's exception into its own 500
    before middleware sees it.)
    """
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except WebimError as error:
            return error_response(error)
        except Exception:
            app.log.exception("unexpected error in %s", view.__name__)
            return error_response(WebimError("an internal error occurred"))

    return wrapper  # type: ignore[return-value]


@app.middleware("http")
def documented_error_shape(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice's own answers (405 for a method the route lacks, its 500) in the documented
    shape `{"error": {"code", "message"}}` instead of chalice's `{"Code", "Message"}`."""
    response = get_response(event)
    chalice_body = response.body
    if response.status_code >= 400 and isinstance(chalice_body, dict) and "Code" in chalice_body:
        kind = (MethodNotAllowedError if response.status_code == 405
                else WebimError if response.status_code >= 500 else BadRequestError)
        shaped = error_response(kind(str(chalice_body.get("Message", ""))))
        return Response(body=shaped.body, status_code=response.status_code, headers={**response.headers})
    return response


def error_response(error: WebimError) -> Response:
    headers: dict[str, str | list[str]] = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    shape: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, RateLimitedError):
        shape["retry_after"] = error.retry_after
    return Response(body={"error": shape}, status_code=error.status, headers={**headers, **retry_after_header(error)})


def retry_after_header(error: WebimError) -> dict[str, str | list[str]]:
    return {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimitedError) else {}


def source_ip() -> str | None:
    """The caller's address as API Gateway saw it (the local stack fills it from the socket)."""
    ip = (current_request().context.get("identity") or {}).get("sourceIp")
    return str(ip) if ip else None


def current_request() -> Request:
    request = app.current_request
    assert request is not None, "only called inside a REST handler"
    return request


def bearer() -> str | None:
    header = current_request().headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def caller(admit: bool = True) -> Identity:
    """Who calls, refused if banned (`admit=False`: the service checks the ban itself)."""
    who = services().authenticator.authenticate(bearer())
    observability.bind(identity=who.key)
    if admit:
        services().operator.admit(who)  # banned: 403 `banned` (docs/operator.md)
    return who


def operator() -> Identity:
    """An operator: a verified token with the operator claim (else 401, or 403 `not_operator`)."""
    who = services().authenticator.authenticate_operator(bearer())
    observability.bind(identity=who.key)
    services().operator.admit(who)
    return who


def body() -> dict[str, Any]:
    """The JSON object of a request body, whatever its Content-Type (none is fine)."""
    raw = current_request().raw_body or b"{}"
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
        raise MalformedJsonError("the request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise MalformedJsonError("the request body is a JSON object")
    refuse_lone_surrogates(parsed)
    return parsed


@app.route("/health", methods=["GET"])
@rest
def health() -> dict[str, object]:
    return {"ok": True}


@app.route("/identity/visitor", methods=["POST"])
@rest
def new_visitor() -> Response:
    services().limits.mint(source_ip())  # per address: minting is public
    return Response(body=services().authenticator.new_visitor().to_json(), status_code=201)


@app.route("/identity/visitor/renew", methods=["POST"])
@rest
def renew_visitor() -> dict[str, Any]:
    return services().authenticator.renew_visitor(caller()).to_json()


@app.route("/identity/dev-login", methods=["POST"])
@rest
def dev_login() -> dict[str, Any]:
    fields = body()  # `operator: true`: a token with the operator claim (local stack only)
    return services().authenticator.dev_login(fields.get("name"), operator=fields.get("operator") is True).to_json()


@app.route("/identity/me", methods=["GET"])
@rest
def me() -> dict[str, Any]:
    return services().linking.describe_self(caller())


@app.route("/identity/link", methods=["POST"])
@rest
def link_visitor() -> dict[str, Any]:
    user = caller()  # first: credentials before the body
    visitor = services().authenticator.authenticate(body().get("visitor_token"))
    services().operator.admit(visitor)  # a banned visitor brings nothing along
    return {"carried_over": services().linking.link(user, visitor)}


@app.route("/peers/{kind}/{peer_id}", methods=["GET"])
@rest
def describe_peer(kind: str, peer_id: str) -> dict[str, Any]:
    who = caller()
    if kind not in KINDS or not valid_id(peer_id):
        raise NotFoundError("no such identity")
    return services().linking.describe_peer(who, Identity(kind, peer_id))


# -- presence -------------------------------------------------------------------------------------
@app.route("/presence", methods=["POST"])
@rest
def presence_batch() -> dict[str, Any]:
    who = caller()  # any signed-in caller; the service decides what each may see
    services().limits.presence_pull(who)
    return {"presence": services().presence.batch(parse_identities(body(), MAX_BATCH), caller=who)}


# -- long polling: the same protocol over REST ------------------------------------------------
@app.route("/lp/open", methods=["POST"])
@rest
def long_poll_open() -> Response:
    # the open reads the ban itself, after its record is written (logic/longpoll.py)
    return Response(body=services().long_poll.open(caller(admit=False)), status_code=201)


@app.route("/lp/poll", methods=["POST"])
@rest
def long_poll() -> dict[str, Any]:
    who = caller()  # credentials are checked before anything in the request is looked at
    request = PollRequest.parse(body())
    return services().long_poll.poll(who, request.connection_id, request.release)


@app.route("/lp/send", methods=["POST"])
@rest
def long_poll_send() -> dict[str, Any]:
    who = caller()
    params = current_request().query_params
    connection_id = str(params.get("connection_id", "")) if params else ""
    release = Release.from_query(params)
    raw = current_request().raw_body or b""
    # Bytes that are not UTF-8 become lone surrogates, which the core refuses (never stored).
    text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
    return {"frames": services().long_poll.send(who, connection_id, text, release)}


@app.route("/lp/close", methods=["POST"])
@rest
def long_poll_close() -> dict[str, Any]:
    who = caller()
    services().long_poll.close(who, PollRequest.parse(body()).connection_id)
    return {"closed": True}


# -- operator tools (docs/operator.md): a host-site token with the operator claim ------------------
@app.route("/operator/reports", methods=["GET"])
@rest
def operator_reports() -> dict[str, Any]:
    operator()
    params: dict[str, str] = dict(current_request().query_params or {})
    return services().operator.reports(params.get("status"), params.get("limit"), params.get("before"))


@app.route("/operator/reports/{report_id}", methods=["GET"])
@rest
def operator_report(report_id: str) -> dict[str, Any]:
    operator()
    return services().operator.report(report_id)


@app.route("/operator/reports/{report_id}/status", methods=["POST"])
@rest
def operator_report_status(report_id: str) -> dict[str, Any]:
    who = operator()
    return services().operator.set_report_status(who, report_id, body().get("status"))


@app.route("/operator/ban", methods=["POST"])
@rest
def operator_ban() -> dict[str, Any]:
    who = operator()
    request = BanRequest.parse(body())
    return services().operator.ban(who, request.identity, request.reason)


@app.route("/operator/unban", methods=["POST"])
@rest
def operator_unban() -> dict[str, Any]:
    who = operator()
    return services().operator.unban(who, BanRequest.parse(body()).identity)


@app.route("/operator/bans/{kind}/{identity_id}", methods=["GET"])
@rest
def operator_ban_of(kind: str, identity_id: str) -> dict[str, Any]:
    operator()
    return services().operator.ban_of(BanRequest.parse({"identity": {"kind": kind, "id": identity_id}}).identity)


@app.route("/operator/delete", methods=["POST"])
@rest
def operator_delete() -> dict[str, Any]:
    who = operator()
    return services().operator.delete(who, body())


@app.route("/operator/export", methods=["POST"])
@rest
def operator_export() -> dict[str, Any]:
    operator()
    fields = body()
    return services().export.export(BanRequest.parse({"identity": fields.get("identity")}).identity,
                                    fields.get("cursor"))


@app.route("/operator/erase", methods=["POST"])
@rest
def operator_erase() -> dict[str, Any]:
    who = operator()  # one bounded step per request: call again until `done` (docs/operator.md)
    return services().erasure.erase(who, BanRequest.parse({"identity": body().get("identity")}).identity)


@app.schedule(Rate(15, unit=Rate.MINUTES))
def sweep_long_poll_doorbells(event: CloudWatchEvent) -> None:
    """Long-poll connections whose client vanished without `lp/close` leave a doorbell queue."""
    app.log.info("long-poll doorbells swept: %d", services().long_poll.sweep())


@app.lambda_function(name="lp_wait_authorizer")
def lp_wait_authorizer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The wait API's authorizer (infra/template.yaml `WaitAuthorizer`, an HTTP API REQUEST
    authorizer with simple responses): the queue a wait reads comes from the signed wait token,
    never from the request. Cached by API Gateway per token."""
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    scheme, _, token = str(headers.get("authorization") or "").partition(" ")
    queue_url = services().long_poll.wait_queue(token.strip() if scheme.lower() == "bearer" else None)
    if queue_url is None:
        return {"isAuthorized": False}
    return {"isAuthorized": True, "context": {"queueUrl": queue_url}}


# -- SQS ----------------------------------------------------------------------------------------
@app.on_sqs_message(queue=jobs_queue_name(), batch_size=10)
def on_job(event: SQSEvent) -> dict[str, list[dict[str, str]]]:
    """A partial batch response: only the failed jobs are retried (and in the end redriven).
    Lambda reads it only with ReportBatchItemFailures on the event source mapping, which chalice
    cannot set: `make deploy` does (docs/deploy.md). A failed job comes back after a short
    backoff, not the queue's visibility timeout (chalicelib/logic/jobs.py)."""
    svc = services()
    context = event.context
    time_left = getattr(context, "get_remaining_time_in_millis", None)
    failed = svc.jobs.run_batch((QueuedJob.from_record(record.to_dict()) for record in event),
                                retry=svc.jobs_queue.retry_later, time_left_ms=time_left)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

# Every route takes any Content-Type, or none: bodies are always read as JSON, and chalice's own
# 415 would be an answer outside the documented shape. Keep this after the last route.
for _methods in app.routes.values():
    for _route in _methods.values():
        _route.content_types = ["*/*"]
