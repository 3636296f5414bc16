"""Structured logs and metrics (Powertools for AWS Lambda): the one place the app speaks to them.

Logs are JSON lines (Powertools Logger, logger `webim`, stdout -> CloudWatch Logs). Each line
carries the invocation's keys, as far as they are known: `connection_id`, `identity`,
`conversation_id`, `seq`, `client_id`, the job's `job` kind, and Lambda's request id and X-Ray
trace id. Keys live in a context variable, set per invocation by `invocation()` (app.py's
middleware) and added to by `bind()` as the code learns them; threads of the local stack each
have their own. Never pass a token or a message's text: neither is ever a key here.

Levels: the happy path logs at most one INFO line per frame (`message_stored`); each push is
DEBUG. The silent paths (410 Gone, receiver offline, retransmit, retries exhausted, a group
fan-out failure, a refused handshake) log INFO or WARNING with a stable `event` name, so
CloudWatch Logs Insights can filter on it (docs/operations.md).

Metrics are CloudWatch EMF lines (Powertools Metrics) printed at the end of each invocation:
counts only, namespace `POWERTOOLS_METRICS_NAMESPACE` (a stack output, "WebIM/<stage>"),
dimension `service`. The local stack (WEBIM_LOCAL) and POWERTOOLS_METRICS_DISABLED record none.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import THREAD_LOCAL_KEYS
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = "webim"
DEFAULT_NAMESPACE = "WebIM"

# The metrics (CloudWatch metric names; docs/operations.md says what each means).
MESSAGES_STORED = "MessagesStored"
PUSHES = "Pushes"
PUSHES_GONE = "PushesGone"  # a push answered 410 (the connection is gone)
RECEIVERS_OFFLINE = "ReceiversOffline"
RETRANSMITS = "Retransmits"
RETRIES_EXHAUSTED = "RetriesExhausted"
HANDSHAKES_REFUSED = "HandshakesRefused"
GROUP_FANOUT_PUSHES = "GroupFanoutPushes"
GROUP_FANOUT_FAILURES = "GroupFanoutFailures"
METRIC_NAMES = (MESSAGES_STORED, PUSHES, PUSHES_GONE, RECEIVERS_OFFLINE, RETRANSMITS, RETRIES_EXHAUSTED,
                HANDSHAKES_REFUSED, GROUP_FANOUT_PUSHES, GROUP_FANOUT_FAILURES)


class _Stdout:
    """sys.stdout as it is at each write (Lambda's never changes; a test's capture does)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service=SERVICE, stream=_Stdout(), use_rfc3339=True)  # type: ignore[arg-type]
_log = logging.getLogger(SERVICE)  # the std logger under `logger`: its handler, its JSON formatter
_metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
                   service=SERVICE)
# One process may run many handlers at once on the local stack; Powertools' metric set is shared.
_metrics_lock = threading.Lock()
_invocation_keys: ContextVar[dict[str, Any]] = ContextVar("webim_invocation_keys", default={})  # noqa: B039


def module_logger(name: str) -> logging.Logger:
    """A module's logger: a child of `webim`, so its lines are JSON with the invocation's keys."""
    return logging.getLogger(f"{SERVICE}.{name}")


def _clean(keys: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in keys.items() if v is not None}


@contextmanager
def invocation(**keys: Any) -> Iterator[None]:
    """One Lambda invocation: fresh keys (a pool thread may carry the last one's), then the
    metrics it counted printed as one EMF line."""
    _invocation_keys.set(_clean(keys))
    THREAD_LOCAL_KEYS.set(_clean(keys))
    try:
        yield
    finally:
        flush_metrics()
        _invocation_keys.set({})
        THREAD_LOCAL_KEYS.set({})


def start_job(**keys: Any) -> None:
    """One job of an SQS batch: the invocation's keys and these, none of the previous job's."""
    THREAD_LOCAL_KEYS.set({**_invocation_keys.get(), **_clean(keys)})


def bind(**keys: Any) -> None:
    """Keys every later line of this invocation carries (None values are skipped)."""
    THREAD_LOCAL_KEYS.set({**THREAD_LOCAL_KEYS.get(), **_clean(keys)})


def bound() -> dict[str, Any]:
    return dict(THREAD_LOCAL_KEYS.get())


def event(name: str, level: int = logging.INFO, exc_info: bool = False, _up: int = 0, **fields: Any) -> None:
    """One structured line: `message` and `event` are `name`; `fields` beside the bound keys.
    Its `location` is the caller's (`_up` more frames up, for the helpers below)."""
    if _log.isEnabledFor(level):
        _log.log(level, name, exc_info=exc_info, stacklevel=2 + _up, extra={"event": name, **_clean(fields)})


def frame_fields(frame: dict[str, Any]) -> dict[str, Any]:
    """The ids a frame carries (never its text): for logging a push of it."""
    return _clean({"frame_type": frame.get("type"), "conversation_id": frame.get("conversation_id"),
                   "seq": frame.get("seq")})


_local = False


def run_locally(local: bool = True) -> None:
    """While the local stack runs in this process: no metrics (as WEBIM_LOCAL in the environment
    says)."""
    global _local
    _local = local


def _metrics_on() -> bool:
    return not _local and "WEBIM_LOCAL" not in os.environ and not is_metrics_disabled()


def count(metric: str, value: int = 1) -> None:
    if value and _metrics_on():
        with _metrics_lock:
            _metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)


def discard_metrics() -> None:
    """Forget what was counted and not printed (a test starting from zero: counts made outside
    an invocation, by services called directly, are never flushed)."""
    with _metrics_lock:
        _metrics.clear_metrics()


def flush_metrics() -> None:
    """Print what was counted as one EMF line (nothing when nothing was counted)."""
    with _metrics_lock:
        if _metrics.metric_set:
            _metrics.flush_metrics()


# -- the paths, each one line and its count ------------------------------------------------------
def handshake_refused(code: str, status: int) -> None:
    event("handshake_refused", code=code, status=status, _up=1)
    count(HANDSHAKES_REFUSED)


def pushed(connection_id: str, identity: str, frame: dict[str, Any]) -> None:
    count(PUSHES)
    event("pushed", logging.DEBUG, to_connection=connection_id, to_identity=identity, **frame_fields(frame), _up=1)


def push_gone(connection_id: str, identity: str, frame: dict[str, Any], forgotten: bool) -> None:
    """410: the connection is gone (a closed tab, a lost network); `forgotten` unless it is
    still in its handshake grace (registered, not yet open)."""
    count(PUSHES_GONE)
    event("push_gone", to_connection=connection_id, to_identity=identity, forgotten=forgotten,
          **frame_fields(frame), _up=1)


def message_stored(conversation_id: str, seq: int, client_id: str, sender: str, repeated: bool) -> None:
    """The happy path's one INFO line per send: which seq a client message id became.
    `repeated`: a retried send recognised by its client id (nothing new stored)."""
    bind(conversation_id=conversation_id, seq=seq, client_id=client_id)
    if not repeated:
        count(MESSAGES_STORED)
    event("message_repeated" if repeated else "message_stored", sender=sender, _up=1)


def receiver_offline(receiver: str, during: str, **ids: Any) -> None:
    """No open connection took the message: it waits, stored, for the receiver's pull."""
    count(RECEIVERS_OFFLINE)
    event("receiver_offline", receiver=receiver, during=during, **ids, _up=1)


def retransmit(receiver: str, attempt: int, messages: int, connections: int) -> None:
    count(RETRANSMITS)
    event("retransmit", receiver=receiver, attempt=attempt, messages=messages, connections=connections, _up=1)


def retries_exhausted(receiver: str, attempt: int) -> None:
    """The last ack check pushed and schedules no other: from now on only the receiver's pull
    (a gap it sees, a reconnect) delivers the message."""
    count(RETRIES_EXHAUSTED)
    event("retries_exhausted", logging.WARNING, receiver=receiver, attempt=attempt, _up=1)


def failed(name: str, **ids: Any) -> None:
    """A best-effort step after the store failed (logged with its traceback; never re-raised)."""
    if name.startswith("group_fanout"):
        count(GROUP_FANOUT_FAILURES)
    event(name, logging.ERROR, exc_info=True, **ids, _up=1)


def group_pushes(pushes: int, online: int, members: int) -> None:
    count(GROUP_FANOUT_PUSHES, pushes)
    event("group_fanout_page", logging.DEBUG, pushes=pushes, online=online, members=members, _up=1)


