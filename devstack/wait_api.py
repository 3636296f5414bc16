"""The long poll's wait API, served from its definition in infra/template.yaml.

On AWS the wait is an HTTP API route (`WaitRoute`) with a Lambda REQUEST authorizer
(`WaitAuthorizer`) and an SQS integration (`WaitIntegration`); no function of ours runs while a
client waits. Locally nothing of that is written twice: `WaitApiDefinition.load` reads those
resources from the template, and `WaitApi` runs them:

- the route key (method and path) and the CORS rule (`WaitApi.CorsConfiguration`);
- the authorizer: its identity source (a missing one is 401 without a call, as API Gateway
  answers), the function named in its `AuthorizerUri` (invoked through the local invoker with a
  version 2.0 REQUEST event), simple responses (`isAuthorized`, `context`: 403 when refused),
  and its result cache, keyed by the identity source for `AuthorizerResultTtlInSeconds`;
- the integration: its subtype names the SQS operation, its `RequestParameters` are evaluated
  as API Gateway evaluates them (`$context.authorizer.*`, `$request.header.*`, literals) and
  typed by botocore's model of the operation; the answer is SQS's, as JSON.

What is emulated rather than run: the held `ReceiveMessage` waits on an event that a send to
the queue sets (moto's own wait would hold a thread per poll: 1,000 held polls must cost
nothing here either); SQS's shape of the answer (the query protocol's JSON, which docs/deploy.md
lists as a first-deploy check); and SQS's retention, which moto never applies: the rings handed
out are deleted at once (on AWS they stay invisible until SQS drops them after a minute: no
client can tell the two apart).
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import yaml
from botocore.exceptions import ClientError
from moto.sqs.models import SQSBackend
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"
PREFIX = "/wait-api"  # where the local server mounts the HTTP API (its own host on AWS)
_SUBTYPES = {"SQS-ReceiveMessage": "ReceiveMessage"}
_FUNCTION = re.compile(r":function:\$\{AppName\}-\$\{Stage\}-([A-Za-z0-9_]+)/invocations$")
_CACHE_LIMIT = 20_000  # authorizer answers kept (each expires after the TTL anyway)

log = logging.getLogger("devstack.wait_api")


@dataclass(frozen=True)
class WaitApiDefinition:
    method: str
    path: str
    identity_source: tuple[str, ...]
    authorizer_function: str
    authorizer_ttl: int
    operation: str
    parameters: dict[str, str]
    timeout_seconds: float
    cors: dict[str, Any]

    @classmethod
    def load(cls, template: Path = TEMPLATE) -> WaitApiDefinition:
        return _load(template, template.stat().st_mtime_ns)

    @classmethod
    def parse(cls, template: Path) -> WaitApiDefinition:
        resources = _read(template)["Resources"]
        route = _one(resources, "AWS::ApiGatewayV2::Route")["Properties"]
        authorizer = _one(resources, "AWS::ApiGatewayV2::Authorizer")["Properties"]
        integration = _one(resources, "AWS::ApiGatewayV2::Integration")["Properties"]
        api = _one(resources, "AWS::ApiGatewayV2::Api")["Properties"]
        method, path = str(route["RouteKey"]).split(" ", 1)
        uri = authorizer["AuthorizerUri"]
        found = _FUNCTION.search(str(uri.get("Fn::Sub", uri) if isinstance(uri, dict) else uri))
        if found is None:
            raise ValueError(f"the wait authorizer's function is not one of the app's: {uri}")
        if not authorizer.get("EnableSimpleResponses") or authorizer.get("AuthorizerPayloadFormatVersion") != "2.0":
            raise ValueError("the local wait API runs simple-response 2.0 authorizers only")
        return cls(method=method, path=path, identity_source=tuple(authorizer["IdentitySource"]),
                   authorizer_function=found.group(1), authorizer_ttl=int(authorizer["AuthorizerResultTtlInSeconds"]),
                   operation=_SUBTYPES[integration["IntegrationSubtype"]],
                   parameters={k: str(v) for k, v in integration["RequestParameters"].items()},
                   timeout_seconds=int(integration.get("TimeoutInMillis", 30000)) / 1000,
                   cors=dict(api.get("CorsConfiguration") or {}))


@functools.lru_cache(maxsize=4)
def _load(template: Path, mtime: int) -> WaitApiDefinition:
    return WaitApiDefinition.parse(template)  # once per version of the file, per process


def _read(template: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            return {name: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {name: loader.construct_sequence(node, deep=True)}
        return {name: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tag)
    return dict(yaml.load(template.read_text(), Loader=Loader))  # noqa: S506  (SafeLoader subclass)


def _one(resources: Mapping[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources.values() if r.get("Type") == kind]
    return dict(found)


def evaluate(expression: str, headers: Mapping[str, str], authorizer: Mapping[str, Any]) -> str | None:
    """One parameter mapping value, as API Gateway evaluates it (None: the source is absent)."""
    if expression.startswith("$context.authorizer."):
        value = authorizer.get(expression[len("$context.authorizer."):])
        return None if value is None else str(value)
    if expression.startswith("$request.header."):
        return headers.get(expression[len("$request.header."):].lower())
    if expression.startswith("$"):
        raise ValueError(f"the local wait API does not evaluate {expression}")
    return expression


class QueueSignals:
    """Which queues were sent to: a held wait sleeps until its queue's signal (or its end).
    Installed on moto's SQS backend, so every send (the app's rings) signals."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()
        self._original: Callable[..., Any] | None = None
        self._original_delete: Callable[..., Any] | None = None

    def install(self) -> None:
        original = self._original = SQSBackend.send_message
        original_delete = self._original_delete = SQSBackend.delete_queue
        signals = self

        def send_message(backend: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
            message = original(backend, queue_name, *args, **kwargs)
            signals.signal(queue_name)
            return message

        def delete_queue(backend: SQSBackend, queue_name: str) -> None:
            original_delete(backend, queue_name)
            signals.signal(queue_name)  # a wait held on it ends now (the client polls: 410), not at its hold's end

        SQSBackend.send_message = send_message  # type: ignore[method-assign,assignment]
        SQSBackend.delete_queue = delete_queue  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            SQSBackend.send_message = self._original  # type: ignore[method-assign]
            self._original = None
        if self._original_delete is not None:
            SQSBackend.delete_queue = self._original_delete  # type: ignore[method-assign]
            self._original_delete = None

    def signal(self, queue_name: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(queue_name, ()))
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def listen(self, queue_name: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(queue_name, set()).add((asyncio.get_running_loop(), event))
        return event

    def forget(self, queue_name: str, event: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(queue_name, set())
            waiters.discard((asyncio.get_running_loop(), event))
            if not waiters:
                self._waiters.pop(queue_name, None)

    def listening(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())


_signals: QueueSignals | None = None
_signals_lock = threading.Lock()


def queue_signals() -> QueueSignals:
    """The process's one QueueSignals, installed on moto at first use (every server in the
    process shares moto's backend, so they share its signals)."""
    global _signals
    with _signals_lock:
        if _signals is None:
            _signals = QueueSignals()
            _signals.install()
        return _signals


def local_wait_url(origin: str, definition: WaitApiDefinition | None = None) -> str:
    """Where a local server's clients wait (LONG_POLL_WAIT_URL; the stack output on AWS)."""
    return origin + PREFIX + (definition or WaitApiDefinition.load()).path


class WaitApi:
    """The wait API's one route, run from its definition (see the module docstring)."""

    def __init__(self, definition: WaitApiDefinition, invoke: Callable[[str, dict[str, Any]], Any],
                 sqs: Callable[[], Any], executor: Executor, signals: QueueSignals,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.definition = definition
        self._invoke = invoke
        self._make_sqs = sqs  # made at the first wait: a server may start before AWS is configured
        self._client: Any = None
        self._executor = executor
        self._signals = signals
        self._clock = clock
        self._cache: dict[tuple[str | None, ...], tuple[float, dict[str, Any] | None]] = {}
        self._cache_lock = threading.Lock()
        self._running: dict[tuple[str | None, ...], asyncio.Future[dict[str, Any] | None]] = {}
        self.authorizer_runs = 0
        self._model = botocore.session.get_session().get_service_model("sqs").operation_model(
            definition.operation).input_shape

    async def handle(self, request: Request) -> Response:
        cors = self._cors_headers(request)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=cors)
        path = "/" + request.path_params.get("path", "")
        if (request.method, path) != (self.definition.method, self.definition.path):
            return JSONResponse({"message": "Not Found"}, status_code=404, headers=cors)
        headers = {k.lower(): v for k, v in request.headers.items()}
        context = await self._authorizer_context(request, headers)
        if isinstance(context, Response):
            context.headers.update(cors)
            return context
        try:
            answer = await self._receive(self._parameters(headers, context), request)
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
            return JSONResponse({"Error": error.response.get("Error", {})}, status_code=status, headers=cors)
        return JSONResponse(answer, headers=cors)

    async def _authorizer_context(self, request: Request, headers: dict[str, str]) -> dict[str, Any] | Response:
        """The authorizer's context for this request, or API Gateway's answer refusing it."""
        sources = tuple(evaluate(s, headers, {}) for s in self.definition.identity_source)
        if any(s is None for s in sources):
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        try:
            context = await self._authorize(sources, request, headers)
        except Exception:
            log.exception("the wait authorizer failed")
            return JSONResponse({"message": "Internal Server Error"}, status_code=500)
        if context is None:
            return JSONResponse({"message": "Forbidden"}, status_code=403)
        return context

    def _cors_headers(self, request: Request) -> dict[str, str]:
        rule = self.definition.cors
        origin = request.headers.get("origin")
        allowed = rule.get("AllowOrigins") or []
        if origin is None or not ("*" in allowed or origin in allowed):
            return {}
        headers = {"Access-Control-Allow-Origin": "*" if "*" in allowed else origin}
        if request.method == "OPTIONS":
            headers["Access-Control-Allow-Methods"] = ",".join(rule.get("AllowMethods") or [])
            headers["Access-Control-Allow-Headers"] = ",".join(rule.get("AllowHeaders") or [])
            if rule.get("MaxAge") is not None:
                headers["Access-Control-Max-Age"] = str(rule["MaxAge"])
        return headers

    async def _authorize(self, sources: tuple[str | None, ...], request: Request,
                         headers: dict[str, str]) -> dict[str, Any] | None:
        now = self._clock()
        with self._cache_lock:
            cached = self._cache.get(sources)
        if cached is not None and cached[0] > now:
            return cached[1]
        running = self._running.get(sources)  # one run answers every request that came meanwhile
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._running[sources] = future
        try:
            context = await self._run_authorizer(sources, request, headers, now)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting on it
            raise
        finally:
            self._running.pop(sources, None)
        future.set_result(context)
        return context

    async def _run_authorizer(self, sources: tuple[str | None, ...], request: Request, headers: dict[str, str],
                              now: float) -> dict[str, Any] | None:
        event = {"version": "2.0", "type": "REQUEST", "routeKey": f"{self.definition.method} {self.definition.path}",
                 "rawPath": self.definition.path, "identitySource": list(sources), "headers": headers,
                 "requestContext": {"http": {"method": request.method, "path": self.definition.path,
                                             "sourceIp": request.client.host if request.client else None}}}
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self._executor, self._invoke, self.definition.authorizer_function, event)
        self.authorizer_runs += 1
        context = dict(answer.get("context") or {}) if answer.get("isAuthorized") is True else None
        with self._cache_lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
            self._cache[sources] = (now + self.definition.authorizer_ttl, context)
        return context

    def _parameters(self, headers: dict[str, str], context: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, expression in self.definition.parameters.items():
            value = evaluate(expression, headers, context)
            if value is None:
                continue
            kind = self._model.members[name].type_name
            params[name] = int(value) if kind == "integer" else value
        return params

    async def _receive(self, params: dict[str, Any], request: Request) -> dict[str, Any]:
        """ReceiveMessage as SQS answers it, waiting (up to WaitTimeSeconds) without a thread. A
        client that goes away ends its wait here (API Gateway would finish it unseen: the same to
        every client, and 1,000 abandoned waits hold nothing locally)."""
        loop = asyncio.get_running_loop()
        wait = min(float(params.pop("WaitTimeSeconds", 0)), self.definition.timeout_seconds)
        queue_name = str(params["QueueUrl"]).rsplit("/", 1)[-1]
        deadline = loop.time() + wait
        event = self._signals.listen(queue_name)
        try:
            while True:
                event.clear()
                received = await loop.run_in_executor(self._executor, self._receive_now, params)
                remaining = deadline - loop.time()
                if received:
                    # SQS's retention, which moto never applies (the module docstring): after the answer
                    loop.run_in_executor(self._executor, self._drop, params["QueueUrl"], received)
                    return _query_json(received)
                if remaining <= 0:
                    return _query_json(received)
                if await _first(event.wait(), _disconnected(request), timeout=remaining) == 1:
                    return _query_json([])
        finally:
            self._signals.forget(queue_name, event)

    def _sqs(self) -> Any:
        if self._client is None:
            self._client = self._make_sqs()
        return self._client

    def _receive_now(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self._sqs().receive_message(**params, WaitTimeSeconds=0).get("Messages", []))

    def _drop(self, queue_url: str, messages: list[dict[str, Any]]) -> None:
        try:
            self._sqs().delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        except ClientError as error:  # e.g. the queue went with its connection: nothing to keep small
            log.debug("handed-out rings not dropped: %s", error)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _first(*waits: Any, timeout: float) -> int | None:
    """Which of the awaitables finished first (None: none within `timeout`); cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return next((i for i, task in enumerate(tasks) if task in done), None)


def _query_json(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """SQS's ReceiveMessage answer in the query protocol's JSON form."""
    shaped = [{"Attributes": None, "Body": m["Body"],
               "MD5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
               "MD5OfMessageAttributes": None, "MessageAttributes": None,
               "MessageId": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in messages]
    return {"ReceiveMessageResponse": {"ReceiveMessageResult": {"messages": shaped or None},
                                       "ResponseMetadata": {"RequestId": str(uuid.uuid4())}}}
