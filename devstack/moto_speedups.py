"""moto, the same answers for less CPU: where a message exchange's time went (bench/profile_exchange.py).

moto re-does fixed work on every call; these patches do it once, and change no answer:

- `UpdateExpressionParser.make`: an UpdateExpression string parses to the same tree every time.
  moto parses it twice per UpdateItem (and per Update of a transaction) and never changes the
  tree: the validator deep-copies it before resolving names and values into the copy. Parsed
  trees are kept by expression string (at most `PARSE_CACHE` of them; a string that fails to
  parse is not kept, so it fails again as before).
- `DepthFirstTraverser`: each of the ten validators walking a tree rebuilt its
  node-type -> handler map twice per node visited (over 700 visits for the project's member
  upsert) and asked `isinstance` of an ABC (slow) three times per node; the map is built once
  per validator and the answer kept per node class (moto registers no virtual subclasses, so
  a class's answer never changes).
- `find_clauses` under the two validators that look for clauses from every node of a tree
  (too many SET/ADD/REMOVE sections, overlapping paths): each asked it again of every node
  below, so a long SET walked its tree quadratically. They change no node, so within their
  walk a node's answer is kept (a copy is returned, as before each call built a new list).
- SQS's clock: each ReceiveMessage asks every message in the queue (the delayed ack-timeout
  checks included) whether it is visible and not delayed, and each answer built two datetimes
  to learn the time; it is read from `time.time_ns` now, to the same microsecond.
- `BaseBackend.urls`: every request rebuilt the service's whole URL table (formatting each
  pattern for each domain) to find its handler; it is kept per backend (and per the ISO-regions
  switch it depends on).
- `method_names_from_class`: every request listed the response class's methods with
  `inspect.getmembers` to see whether the action is one; a class's functions are listed once.

- `camelcase_to_underscores`: every SQS queue's `attributes` (built for each SendMessage, and
  three times per message received by the retention check) converts each attribute's name
  character by character, as each request converts its action's; kept per string.
- SQS's retention check per message received read one attribute by building all of them (each
  build counts the queue's visible and delayed messages) three times; it reads that one now.
- The validators' `deepcopy` of an expression's tree: deepcopy's generic reduce-and-rebuild per
  node; the same copy (new node objects of the same classes, their attributes copied the same
  way, parents pointing within the copy) made directly, anything else still by `copy.deepcopy`.
- A fast dispatch path (`process_request`, below): DynamoDB and SQS JSON requests go straight
  to their handler without a werkzeug request or the search through every service's URLs.

`tests/test_moto_fast_dispatch.py` compares each answer's bytes, plain and patched, for DynamoDB
and SQS calls. `tests/test_moto_speedups.py` runs the same update cases (success, each kind of refusal) against
plain and patched moto and expects identical answers and table contents.
"""
from __future__ import annotations

import copy
import functools
import inspect
import re
import threading
import time
from typing import Any

from moto import backend_index
from moto.core import base_backend as _base_backend
from moto.core import config as core_config
from moto.core import responses as _core_responses
from moto.core.botocore_stubber import BotocoreStubber as _BotocoreStubber
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.parsing import ast_nodes as _ast_nodes
from moto.dynamodb.parsing import expressions as _expressions
from moto.dynamodb.parsing import validators as _validators
from moto.moto_api import recorder
from moto.sqs import models as _sqs_models
from werkzeug.datastructures import Headers as _Headers
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import HTTPException  # moto's own, re-exported there

# moto's modules, patched below: untyped where it counts, so typed as Any here
base_backend: Any = _base_backend
core_responses: Any = _core_responses
ast_nodes: Any = _ast_nodes
validators: Any = _validators
UpdateExpressionParser: Any = _expressions.UpdateExpressionParser  # type: ignore[attr-defined]
sqs_models: Any = _sqs_models

PARSE_CACHE = 1024

ORIGINAL_MAKE = UpdateExpressionParser.__dict__["make"]
ORIGINAL_NODES_TO_BE_PROCESSED = ast_nodes.DepthFirstTraverser.nodes_to_be_processed
ORIGINAL_PROCESS = ast_nodes.DepthFirstTraverser.process
ORIGINAL_TRAVERSE = ast_nodes.DepthFirstTraverser.traverse_node_recursively
ORIGINAL_METHOD_NAMES = core_responses.method_names_from_class
ORIGINAL_FIND_CLAUSES = ast_nodes.Node.find_clauses
ORIGINAL_URLS: Any = base_backend.BaseBackend.__dict__["urls"]
ORIGINAL_UNIX_TIME = sqs_models.unix_time
ORIGINAL_SQS_CAMEL = sqs_models.camelcase_to_underscores
ORIGINAL_CORE_CAMEL = core_responses.camelcase_to_underscores
ORIGINAL_RETENTION = sqs_models.SQSBackend.is_message_valid_based_on_retention_period
ORIGINAL_VALIDATOR_DEEPCOPY = validators.deepcopy
ORIGINAL_UNIX_TIME_MILLIS = sqs_models.unix_time_millis
# validators that read the tree and change nothing in it
READ_ONLY_VALIDATORS = (validators.ActionCountValidator, validators.OverlappingPathsValidator)
_walk = threading.local()  # .clauses: (id(node), clause types) -> clauses, during such a walk


@functools.lru_cache(maxsize=PARSE_CACHE)
def _parse(expression: str) -> Any:
    return ORIGINAL_MAKE.__func__(UpdateExpressionParser, expression)


def _make(cls: type, expression_str: str) -> Any:
    if cls is not UpdateExpressionParser or not isinstance(expression_str, str):
        return ORIGINAL_MAKE.__func__(cls, expression_str)
    return _parse(expression_str)


def _handlers(self: Any) -> dict[type, Any]:
    handlers: dict[type, Any] | None = self.__dict__.get("_devstack_handlers")
    if handlers is None:
        handlers = self.__dict__["_devstack_handlers"] = self._processing_map()
    return handlers


def _nodes_to_be_processed(self: Any) -> tuple[type, ...]:
    types: tuple[type, ...] | None = self.__dict__.get("_devstack_types")
    if types is None:
        types = self.__dict__["_devstack_types"] = tuple(_handlers(self))
    return types


def _process(self: Any, node: Any) -> Any:
    for class_key, processor in _handlers(self).items():
        if isinstance(node, class_key):
            return processor(node)
    return None


@functools.cache
def _is_node(cls: type) -> bool:
    return issubclass(cls, ast_nodes.Node)


def _handler_for(self: Any, cls: type) -> Any:
    by_class: dict[type, Any] | None = self.__dict__.get("_devstack_by_class")
    if by_class is None:
        by_class = self.__dict__["_devstack_by_class"] = {}
    if cls not in by_class:
        # the first matching entry, as `process` picks it
        by_class[cls] = next((h for key, h in _handlers(self).items() if issubclass(cls, key)), None)
    return by_class[cls]


def _traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
    """moto's depth-first walk, processing bottom-up; the same steps in the same order."""
    if _is_node(node.__class__):
        parent_node = node.parent
        if node.children is not None:
            for i, child_node in enumerate(node.children):
                self.pre_processing_of_child(node, i)
                self.traverse_node_recursively(child_node, i)
        handler = _handler_for(self, type(node))
        if handler is not None:
            node = handler(node)
            node.parent = parent_node
            if parent_node:
                parent_node.children[child_id] = node
    return node


def _find_clauses(self: Any, clause_types: Any) -> list[Any]:
    memo: dict[tuple[int, tuple[type, ...]], list[Any]] | None = getattr(_walk, "clauses", None)
    if memo is None:
        return list(ORIGINAL_FIND_CLAUSES(self, clause_types))
    key = (id(self), tuple(clause_types))
    found = memo.get(key)
    if found is None:
        found = memo[key] = ORIGINAL_FIND_CLAUSES(self, clause_types)  # its recursion comes back here
    return list(found)


def _read_only_traverse(self: Any, node: Any) -> Any:
    outer = getattr(_walk, "clauses", None)
    _walk.clauses = {}  # nodes stay alive (and unchanged) during the walk: ids are theirs
    try:
        return self.traverse_node_recursively(node)
    finally:
        _walk.clauses = outer


def _urls(self: Any) -> Any:
    kept: dict[bool, Any] = self.__dict__.setdefault("_devstack_urls", {})
    iso = bool(base_backend.enable_iso_regions())
    if iso not in kept:
        kept[iso] = ORIGINAL_URLS.fget(self)
    return kept[iso]


def _unix_time(dt: Any = None) -> float:
    """moto's `unix_time`: seconds since the epoch to the microsecond, as it adds them up."""
    if dt is not None:
        return float(ORIGINAL_UNIX_TIME(dt))
    total, micro = divmod(time.time_ns() // 1000, 1_000_000)
    days, seconds = divmod(total, 86400)
    return (days * 86400) + (seconds + (micro / 1e6))


def _unix_time_millis(dt: Any = None) -> float:
    return _unix_time(dt) * 1000.0


@functools.lru_cache(maxsize=4096)
def _camel(argument: str) -> str:
    return str(ORIGINAL_SQS_CAMEL(argument))


def _camelcase_to_underscores(argument: Any) -> Any:
    """moto's, kept per string: every SQS queue's `attributes` converts each attribute's name."""
    if type(argument) is not str:
        return ORIGINAL_SQS_CAMEL(argument)
    return _camel(argument)


def _retention_ok(self: Any, queue_name: str, message: Any) -> bool:
    """moto's check, reading the one attribute it asks for instead of building every attribute of
    the queue three times (each counting the queue's messages) per message received."""
    retention = self.get_queue(queue_name).message_retention_period
    if retention is None or isinstance(retention, bool):  # moto's own path, its own answer
        return bool(ORIGINAL_RETENTION(self, queue_name, message))
    return bool(retention + message.sent_timestamp / 1000 > sqs_models.unix_time())


_ATOMIC = frozenset({str, int, float, bool, type(None)})
_copy: Any = copy


@functools.cache
def _plain_node(cls: Any) -> bool:
    """An AST node class that `copy.deepcopy` copies as `cls.__new__` plus a deep copy of its
    `__dict__` (no copy hooks, no slots)."""
    return (issubclass(cls, ast_nodes.Node) and not hasattr(cls, "__deepcopy__")
            and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
            and cls.__getstate__ is object.__getstate__ and not hasattr(cls, "__setstate__")
            and not any("__slots__" in vars(k) for k in cls.__mro__) and cls not in _copy._deepcopy_dispatch)


def _tree_copy(value: Any, memo: dict[int, Any]) -> Any:
    cls: Any = type(value)
    if cls in _ATOMIC:
        return value
    done = memo.get(id(value), memo)
    if done is not memo:
        return done
    if cls is list:
        new_list: list[Any] = []
        memo[id(value)] = new_list
        new_list.extend(_tree_copy(item, memo) for item in value)
        return new_list
    if _plain_node(cls):
        new = cls.__new__(cls)
        memo[id(value)] = new
        new.__dict__.update({key: _tree_copy(item, memo) for key, item in value.__dict__.items()})
        return new
    return copy.deepcopy(value, memo)  # anything else (typed values, dicts): deepcopy's own way


def _validator_deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """`copy.deepcopy` for the validators' copy of an expression's tree, the same copy: its
    generic reduce-and-rebuild for each node is most of a validator's setup."""
    return _tree_copy(value, {} if memo is None else memo)


@functools.cache
def _method_names(clazz: type) -> list[str]:
    return [name for name, _ in inspect.getmembers(clazz, predicate=inspect.isfunction)]


def _method_names_from_class(clazz: object) -> list[str]:
    if not isinstance(clazz, type):
        return list(ORIGINAL_METHOD_NAMES(clazz))
    return _method_names(clazz)


def _patches() -> list[tuple[Any, str, Any, Any]]:
    """(owner, attribute, moto's own, ours): `install` sets the last, `uninstall` the third, so
    the two can never disagree on what is patched."""
    return [
        (UpdateExpressionParser, "make", ORIGINAL_MAKE, classmethod(_make)),
        (ast_nodes.DepthFirstTraverser, "nodes_to_be_processed", ORIGINAL_NODES_TO_BE_PROCESSED,
         _nodes_to_be_processed),
        (ast_nodes.DepthFirstTraverser, "process", ORIGINAL_PROCESS, _process),
        (ast_nodes.DepthFirstTraverser, "traverse_node_recursively", ORIGINAL_TRAVERSE, _traverse_node_recursively),
        (core_responses, "method_names_from_class", ORIGINAL_METHOD_NAMES, _method_names_from_class),
        (ast_nodes.Node, "find_clauses", ORIGINAL_FIND_CLAUSES, _find_clauses),
        (sqs_models, "unix_time", ORIGINAL_UNIX_TIME, _unix_time),
        (base_backend.BaseBackend, "urls", ORIGINAL_URLS, property(_urls)),
        (sqs_models, "unix_time_millis", ORIGINAL_UNIX_TIME_MILLIS, _unix_time_millis),
        (sqs_models, "camelcase_to_underscores", ORIGINAL_SQS_CAMEL, _camelcase_to_underscores),
        (core_responses, "camelcase_to_underscores", ORIGINAL_CORE_CAMEL, _camelcase_to_underscores),
        (sqs_models.SQSBackend, "is_message_valid_based_on_retention_period", ORIGINAL_RETENTION, _retention_ok),
        (validators, "deepcopy", ORIGINAL_VALIDATOR_DEEPCOPY, _validator_deepcopy),
    ]


def install() -> None:
    """Idempotent, process-wide."""
    for owner, name, _, ours in _patches():
        setattr(owner, name, ours)
    for validator in READ_ONLY_VALIDATORS:
        validator.traverse = _read_only_traverse
    _fast["on"] = True


def installed() -> bool:
    return bool(_fast["on"])


def uninstall() -> None:
    """Plain moto again (the contract test compares the two)."""
    for owner, name, original, _ in _patches():
        setattr(owner, name, original)
    _fast["on"] = False
    for validator in READ_ONLY_VALIDATORS:
        if "traverse" in validator.__dict__:
            del validator.traverse


# --- the fast dispatch path: DynamoDB and SQS JSON requests straight to their handler ---------
# moto builds a werkzeug Request (a whole WSGI environ) for every call and matches its URL against
# each service's patterns and then each of the service's URL patterns. For a JSON-protocol call
# (an X-Amz-Target header, a POST to "/", no query) to DynamoDB or SQS the handler is known from
# the host alone, and the handler reads only what `_JsonRequest` carries: moto's own
# `setup_class` and `call_action` then run unchanged on it.
FAST_SERVICES = {"dynamodb": "DynamoDB_20120810.", "sqs": "AmazonSQS."}  # host's service -> target prefix
ORIGINAL_PROCESS_REQUEST = _BotocoreStubber.process_request
_fast = {"on": False}
_EMPTY: Any = ImmutableMultiDict()


class _JsonRequest:
    """The slice of moto's werkzeug `Request` that setup_class, the JSON parser and these
    services' handlers read, for a bodied POST to "/" without a query."""

    from_wsgi_server = False
    content_encoding: str | None = None
    query_string = b""
    path = raw_path = "/"
    method = "POST"

    def __init__(self, url: str, netloc: str, headers: Any, body: bytes) -> None:
        self.raw_url = url
        self.url_root = url
        self.data = body
        self.form = self.files = self.values = _EMPTY
        # the headers werkzeug's environ would give back: the sent ones plus Host
        self.headers = _Headers([("Host", netloc)])
        for key, value in headers.items():
            if key.lower() != "transfer-encoding":
                self.headers.add(key, value.decode("utf-8") if isinstance(value, bytes) else value)
        self.content_type = self.headers.get("Content-Type")
        self.environ: dict[str, Any] = {}

    def get_data(self, *args: Any, **kwargs: Any) -> bytes:
        return self.data


@functools.lru_cache(maxsize=64)
def _handler_for_url(url: str) -> Any:
    """The handler moto's own search finds for this URL (`process_request`'s loops), or None."""
    from moto import backends as _backends  # noqa: PLC0415  (as moto imports it, late)

    backends: Any = _backends

    for service, pattern in backend_index.backend_url_patterns:
        if pattern.match(url):
            if service not in FAST_SERVICES:
                return None
            backend = backends.get_backend(service)[DEFAULT_ACCOUNT_ID]["us-east-1"]
            for route, handler in backend.urls.items():
                if re.compile(route).match(url):
                    return handler
            return None
    return None


def _fast_handler(url: str, headers: Any) -> tuple[Any, str] | None:
    """moto's handler for this request if the fast path may take it, and the host."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if not sep or scheme not in ("http", "https") or not slash or path or "?" in netloc or "#" in netloc:
        return None
    service = netloc.split(".", 1)[0]
    if service not in FAST_SERVICES or not netloc.endswith(".amazonaws.com"):
        return None
    target = headers.get("X-Amz-Target")
    if isinstance(target, bytes):
        target = target.decode("utf-8")
    if not target or not target.startswith(FAST_SERVICES[service]):
        return None
    if core_config.passthrough_url(url) or core_config.passthrough_service(service):
        return None
    if not core_config.service_whitelisted(service) or recorder._user_enabled:
        return None
    handler = _handler_for_url(url)
    return None if handler is None else (handler, netloc)


def process_request(stubber: Any, request: Any) -> Any:
    """BotocoreStubber.process_request, through the fast path where it applies."""
    if _fast["on"] and request.method == "POST" and request.body:
        found = _fast_handler(request.url, request.headers)
        if found is not None:
            handler, netloc = found
            body = request.body if isinstance(request.body, bytes) else request.body.encode("utf-8")
            light = _JsonRequest(request.url, netloc, request.headers, body)
            try:
                return handler(light, light.raw_url, light.headers)
            except HTTPException as e:
                return e.code, e.get_headers(), e.get_body()
    return ORIGINAL_PROCESS_REQUEST(stubber, request)
