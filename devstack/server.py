"""Assembles the local stack: embedded AWS, the app, and the API Gateway emulation as one
ASGI application served by uvicorn.

Paths (one origin, http://127.0.0.1:8000 by default):
    /ws                          the WebSocket API
    /api/...                     the REST API (the prefix plays the stage's part)
    /@connections/{id}           the callback API
    /s3/{bucket}[/{key}]         the embedded S3's presigned POST and GET (s3_front.py)
    /config.json                 where the frontend finds the two APIs
    /                            frontend/ as static files
"""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3
import uvicorn
from botocore.config import Config
from botocore.credentials import Credentials
from chalice.app import Chalice
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from chalicelib import observability
from chalicelib.wiring import Services, install_services
from devstack import faults
from devstack.callback_api import callback_routes, install_loopback
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import EmbeddedAws
from devstack.invoker import LambdaInvoker
from devstack.local_secrets import provision_secrets
from devstack.page_headers import PageHeaders, page_headers
from devstack.s3_front import PREFIX as S3_PREFIX
from devstack.s3_front import s3_routes
from devstack.sqs_source import SqsEventSource
from devstack.wait_api import PREFIX as WAIT_PREFIX
from devstack.wait_api import WaitApi, WaitApiDefinition, local_wait_url, queue_signals
from devstack.websocket_gateway import (
    IDLE_TIMEOUT_SECONDS,
    MAX_DURATION_SECONDS,
    Utf8CheckedProtocol,
    WebSocketGateway,
)

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
REST_PREFIX = "/api"
STAGE = "local"
# Each handler invocation takes a thread while it runs, and a held long poll holds one for
# its whole wait: size the pool for hundreds of sockets and dozens of held polls at once.
HANDLER_THREADS = 128
# a wait's receives are short (the wait itself is an event), but never starve behind pushes
_WAIT_SQS_CONFIG = Config(max_pool_connections=128, retries={"mode": "standard", "max_attempts": 2})
MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway WebSocket message limit
EMBEDDABLE = {"Access-Control-Allow-Origin": "*"}

log = logging.getLogger("devstack")


@dataclass(frozen=True)
class Endpoints:
    """Where the app reaches this server. `callback_url`: its calls there are answered
    in-process (None: the environment's `CALLBACK_URL`, as the in-process test servers set it).
    `media_endpoint_url`: the S3 front's origin, which the pages' CSP allows. `credentials`:
    whose signatures the callback API and the S3 front accept (None: the AWS credentials in this
    process's environment, which the app's boto3 clients sign with)."""

    callback_url: str | None = None
    media_endpoint_url: str | None = None
    credentials: Credentials | None = None


def build_asgi(
    invoker: LambdaInvoker,
    registry: ConnectionRegistry,
    executor: ThreadPoolExecutor,
    frontend: Path | None = FRONTEND,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    max_duration: float = MAX_DURATION_SECONDS,
    endpoints: Endpoints = Endpoints(),  # noqa: B008  (frozen: one shared default is safe)
) -> Starlette:
    callback_credentials = endpoints.credentials or environment_credentials()
    media_endpoint_url = endpoints.media_endpoint_url
    callback_url = endpoints.callback_url or os.environ.get("CALLBACK_URL")
    if callback_url:
        install_loopback(callback_url, registry, callback_credentials)
    gateway = WebSocketGateway(invoker, registry, executor, STAGE, idle_timeout=idle_timeout,
                               max_duration=max_duration)
    # the long poll's wait, run from infra/template.yaml's definition (no second path)
    waits = WaitApi(WaitApiDefinition.load(), invoker.function, lambda: boto3.client("sqs", config=_WAIT_SQS_CONFIG),
                    executor, queue_signals())

    async def rest(request: Request) -> Response:
        path = request.url.path[len(REST_PREFIX):] or "/"
        if request.url.query:
            path += "?" + request.url.query
        body = await request.body()
        headers = dict(request.headers)
        loop = asyncio.get_running_loop()
        peer = request.client.host if request.client else None  # API Gateway's sourceIp
        result = await loop.run_in_executor(executor, invoker.rest, request.method, path, headers, body, peer)
        return Response(result.body, status_code=result.status, headers=result.headers)

    async def frontend_config(request: Request) -> Response:
        host = request.headers.get("host", "127.0.0.1")
        # The gateway's limits, so the page pings and reconnects in time (on AWS: 600 and 7200).
        return JSONResponse({"websocketUrl": f"ws://{host}/ws", "apiUrl": f"http://{host}{REST_PREFIX}",
                             "devLogin": True,
                             "websocketLimits": {"idleSeconds": _seconds(idle_timeout),
                                                 "maxSeconds": _seconds(max_duration)}},
                            headers=EMBEDDABLE)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    routes: list[Any] = [
        WebSocketRoute("/ws", gateway.handle),
        Route(WAIT_PREFIX + "/{path:path}", waits.handle, methods=["POST", "OPTIONS"]),
        Route(REST_PREFIX + "/{path:path}", rest, methods=methods),
        Route(REST_PREFIX, rest, methods=methods),
        Route("/config.json", frontend_config),
        *callback_routes(registry, callback_credentials),
        # The browser's uploads and downloads (MEDIA_ENDPOINT_URL), signed by the same credentials
        *s3_routes(callback_credentials),
    ]
    if frontend is not None:
        # The widget runs on other sites' pages: its modules and config are fetched cross-origin
        # (on AWS: the bucket's CORS rule, deploy.md).
        static = CORSMiddleware(StaticFiles(directory=frontend, html=True), allow_origins=["*"], allow_methods=["GET"])
        # CSP, no framing, no referrer: what CloudFront's response headers policy adds on AWS
        routes.append(Mount("/", PageHeaders(static, page_headers(media_endpoint_url=media_endpoint_url))))
    return Starlette(routes=routes)


def _seconds(value: float) -> float:
    """600, not 600.0, as protocol.md shows (a fraction only where the setting has one)."""
    return int(value) if float(value).is_integer() else value


def environment_credentials() -> Credentials | None:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)


def app_settings(stack_env: Mapping[str, str], outputs: Mapping[str, str], origin: str) -> dict[str, str]:
    """What the app gets as its environment, as a Lambda function gets its variables: the
    stack's outputs and secrets' ids, the local endpoints, and the settings the stack was
    started with (`ACK_TIMEOUT_SECONDS=1 python -m devstack`, as the tests start it)."""
    return {
        **stack_env, **outputs,
        "CALLBACK_URL": origin,
        "LONG_POLL_WAIT_URL": local_wait_url(origin),
        # the app presigns media POSTs and GETs for this origin's S3 front (path-style)
        "MEDIA_ENDPOINT_URL": origin + S3_PREFIX,
        "WEBIM_LOCAL": "1",
        "WEBIM_DEV_LOGIN": "1",
    }


@dataclass
class LocalStack:
    """Everything `make run` starts, in start order; `stop()` undoes it in reverse.

    `env` holds the stack's own inputs (settings, `WEBIM_LOCAL_*`); by default this process's
    environment, which the stack reads and never changes: the app gets its settings from
    `app_settings`, built into services here and installed before its first event."""

    host: str = "127.0.0.1"
    port: int = 8000
    sqs_retry_visibility: int | None = None
    faults_spec: str = ""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def start(self) -> Starlette:
        # first: the hooks go on botocore's built-in handlers, which each session copies when
        # it is made (they act only inside invocations, so provisioning meets no fault)
        self.faults = faults.from_environment({faults.ENV: self.faults_spec})
        observability.run_locally()  # no EMF metric lines on the local stack
        self.aws = EmbeddedAws(stage=STAGE)
        self.aws.start()
        outputs = {**self.aws.provision(), **provision_secrets(STAGE)}
        origin = f"http://{self.host}:{self.port}"
        self.app_env = app_settings(self.env, outputs, origin)
        app = load_app()
        self.executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS, thread_name_prefix="lambda")
        self.registry = ConnectionRegistry()
        invoker = LambdaInvoker(app, stage=STAGE)
        # A failed or dead batch returns after the queue's visibility timeout (30 s); a run with
        # a shorter ack timeout (ACK_TIMEOUT_SECONDS) may shorten that alike, to keep AWS's ratio
        retry = self.env.get("WEBIM_LOCAL_SQS_RETRY_SECONDS")
        # the SQS handler's queue is named at import from JOBS_QUEUE_NAME, which this process's
        # environment lacks: its event source is told the stack's queue
        queues = {config.queue or "": outputs["JOBS_QUEUE_URL"] for config in invoker.sqs_handlers()}
        self.sqs_source = SqsEventSource(
            invoker, boto3.client("sqs"), self.executor, queue_urls=queues,
            retry_visibility=int(retry) if retry else self.sqs_retry_visibility,
        )
        # Shorter gateway limits make the idle and 2-hour closes testable (the browser tests).
        asgi = build_asgi(invoker, self.registry, self.executor,
                          idle_timeout=float(self.env.get("WEBIM_LOCAL_WS_IDLE_SECONDS", IDLE_TIMEOUT_SECONDS)),
                          max_duration=float(self.env.get("WEBIM_LOCAL_WS_MAX_SECONDS", MAX_DURATION_SECONDS)),
                          endpoints=Endpoints(origin, self.app_env["MEDIA_ENDPOINT_URL"]))
        # After build_asgi, which installs the callback API's in-process answer (and with it the
        # fault mode's spurious 410s) on botocore's built-in handlers: a session made before it
        # would miss them and post over loopback HTTP. Before any event can reach the app.
        install_services(Services.from_env(self.app_env))
        self.sqs_source.start()
        return asgi

    def stop(self) -> None:
        if self.faults is not None:  # what the run met, for the chaos test and the curious
            log.warning("faults injected: %s", json.dumps(dict(sorted(self.faults.counts.items()))))
        self.sqs_source.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        install_services(None)
        observability.run_locally(False)
        self.aws.stop()


def load_app() -> Chalice:
    """Import the project's app.py after the environment is in place, as Lambda does."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    app: Chalice = importlib.import_module("app").app
    return app


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's sans-io WebSocket protocol logs a refused handshake (an HTTP denial response,
    which is how API Gateway refuses `$connect`) as "returned without completing handshake"."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing handshake" not in record.getMessage()


class WebSocketProtocol(Utf8CheckedProtocol):
    """uvicorn's sans-io WebSocket protocol (failing a text frame that is not UTF-8 with 1007,
    websocket_gateway.py), answering a handshake it cannot parse.

    websockets refuses a request line or a header line over 8 KB, or over 128 headers, and
    queues its 414 / 431 answer, but uvicorn never sends it nor closes: such sockets stayed
    open for good. Send the answer (400 for any other unparsable request) and close at once.
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is None or self.handshake_initiated or self.transport.is_closing():
            return
        answer = b"".join(self.conn.data_to_send()) or (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: 12\r\nconnection: close\r\n\r\nBad Request\n")
        self.transport.write(answer)
        self.transport.close()


def uvicorn_config(asgi: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """How the local stack (and the in-process test servers) run uvicorn."""
    return uvicorn.Config(asgi, host=host, port=port, http="httptools", ws=WebSocketProtocol,
                          ws_max_size=MAX_MESSAGE_BYTES, lifespan="off", **options)


class _DevServer(uvicorn.Server):
    """uvicorn, announcing readiness and ending quietly on Ctrl-C or SIGTERM."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after shutting down; a dev server just exits 0.
        self._captured_signals.clear()


def serve(host: str, port: int, faults_spec: str = "") -> None:
    started = time.monotonic()
    stack = LocalStack(host=host, port=port, faults_spec=faults_spec)
    asgi = stack.start()
    config = uvicorn_config(
        asgi,
        host,
        port,
        access_log=False,  # query strings carry tokens; they never go to a log
        log_level="warning",
    )

    def announce() -> None:
        ready = time.monotonic() - started
        print(f"WebIM local stack ready at http://{host}:{port}/ in {ready:.1f}s (Ctrl-C stops it)", flush=True)

    server = _DevServer(config, announce)  # its Config sets up uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(_DenialIsNotAnError())
    try:
        server.run()
    finally:
        stack.stop()
        print("WebIM local stack stopped", flush=True)
