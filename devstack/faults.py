"""Fault injection for the local stack: AWS-level faults at set rates, seeded, off by default.

Switched on by `WEBIM_FAULTS` (read at start, `devstack.server.LocalStack`), e.g.

    WEBIM_FAULTS="seed=1,error=0.02,death=0.01,dup_job=0.05,twice=0.01,gone=0.02" make run

Each rate is a probability per chance (0 to 1; absent is 0):

- `error`: one of the app's AWS calls fails as it would once botocore's retries ran out (the
  service's throttling error, a `ClientError` with `MaxAttemptsReached`); nothing is done.
  (`before-call` hook)
- `death`: the "Lambda" dies before a call (nothing sent) or, as often, after it (done, the
  answer lost): `LambdaDeath`, a BaseException, so the app's `except Exception` cannot swallow
  it; the invoker then answers as Lambda does for a crashed invocation (a WebSocket frame gets
  no answer, REST 502, an SQS batch returns after its visibility timeout). (`before-call` /
  `after-call` hooks)
- `twice`: a call runs twice, as an SDK retry after a lost response does: the request is
  executed, its answer discarded, and it is sent again (a conditional write then fails its
  condition on the second attempt). (`needs-retry` hook)
- `dup_job`: an SQS message is delivered a second time (at-least-once), in a batch of its own
  after its first batch. (`sqs_source.py`)
- `gone`: the callback API answers 410 GoneException to the app's POST for a live connection
  (the frame is not sent). (`callback_api.py`)

Only calls made inside an invocation (`invocation()`, which the invoker enters) are touched:
the stack's own provisioning, its SQS poller and the S3 front are AWS's machinery, not the app.
The hooks go on botocore's built-in handlers, so every boto3 client created after `install()`
has them, as moto's stubber does.

Seeded: one `random.Random(seed)` draws every chance, in the order the chances are taken; a
single-threaded sequence of calls meets the same faults on every run (a stack serving many
threads at once interleaves the draws differently from run to run, the rates stay).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS

log = logging.getLogger("devstack.faults")
ENV = "WEBIM_FAULTS"

# What botocore's standard retry mode raises when throttling outlasted its attempts, per service
# (the callback API throttles with 429 LimitExceededException; DynamoDB and SQS with 400).
_THROTTLED: dict[str, tuple[str, int]] = {
    "dynamodb": ("ProvisionedThroughputExceededException", 400),
    "sqs": ("ThrottlingException", 400),
    "apigatewaymanagementapi": ("LimitExceededException", 429),
}
_DEFAULT_THROTTLED = ("ThrottlingException", 400)


class LambdaDeath(BaseException):  # noqa: N818  (a death, not an error: nothing may catch it)
    """The "Lambda" died (a crash, a timeout, the runtime killed). A BaseException, so the
    app's `except Exception` cannot swallow it: only the invoker, standing where Lambda's
    runtime stands, sees it."""


@dataclass(frozen=True)
class FaultRates:
    seed: int = 0
    error: float = 0.0
    death: float = 0.0
    dup_job: float = 0.0
    twice: float = 0.0
    gone: float = 0.0

    @classmethod
    def parse(cls, text: str) -> FaultRates:
        """`"seed=1,error=0.02,..."`; an unknown key or a rate outside 0..1 is refused (a typo
        must not run a chaos test with no faults)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(f"{ENV}: unknown setting {part!r} (known: {', '.join(sorted(known))})")
            if key == "seed":
                values[key] = int(raw)
                continue
            rate = float(raw)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{ENV}: {key} must be a probability within 0..1, not {raw}")
            values[key] = rate
        return cls(**values)

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "seed")


class FaultInjector:
    """Draws the chances and counts what it injected (`counts`, by kind)."""

    def __init__(self, rates: FaultRates) -> None:
        self.rates = rates
        self._rng = random.Random(rates.seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._local = threading.local()
        self._forced_gone: set[str] = set()
        self._scripted: list[list[Any]] = []  # [operation, fault, calls to let pass first]

    def script(self, operation: str, fault: str, skip: int = 0) -> None:
        """One fault at one call, for crash-point tests: the (`skip` + 1)-th call of
        `operation` ("dynamodb.UpdateItem") inside an invocation meets `fault`: "error",
        "death_before", "death_after" or "twice". Scripted faults come before the rates."""
        if fault not in SCRIPTED:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(SCRIPTED)})")
        with self._lock:
            self._scripted.append([operation, fault, skip])

    def _scripted_fault(self, operation: str) -> str | None:
        with self._lock:
            for entry in self._scripted:
                if entry[0] == operation:
                    if entry[2] > 0:
                        entry[2] -= 1
                        return None
                    self._scripted.remove(entry)
                    self.counts[entry[1]] += 1
                    return str(entry[1])
        return None

    def force_gone(self, connection_id: str) -> None:
        """The app's next push to this connection is answered 410 (for a test aiming at one)."""
        with self._lock:
            self._forced_gone.add(connection_id)

    def gone(self, connection_id: str) -> bool:
        """Whether the app's push to this live connection is answered 410 now."""
        if not self.active():
            return False
        with self._lock:
            if connection_id in self._forced_gone:
                self._forced_gone.discard(connection_id)
                self.counts["gone"] += 1
                return True
        return self.chance("gone")

    def chance(self, kind: str) -> bool:
        """Whether the fault `kind` strikes now (counted when it does)."""
        rate = float(getattr(self.rates, kind))
        if rate <= 0:
            return False
        with self._lock:
            hit = self._rng.random() < rate
            if hit:
                self.counts[kind] += 1
        return hit

    def _coin(self) -> bool:
        with self._lock:
            return self._rng.random() < 0.5

    # -- the invocation scope --------------------------------------------------------------------
    @contextlib.contextmanager
    def invocation(self) -> Iterator[None]:
        """The calls made in this block (this thread) are the app's: faults apply to them."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._local.die_after = None

    def active(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    # -- botocore hooks ------------------------------------------------------------------------
    def before_call(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not self.active():
            return None
        operation = f"{model.service_model.service_name}.{model.name}"
        scripted = self._scripted_fault(operation)
        if scripted is not None:
            return self._apply(scripted, operation, model)
        if self.chance("death"):
            if self._coin():
                self.counts["death_before"] += 1
                log.warning("fault: the Lambda dies before %s", operation)
                raise LambdaDeath(f"died before {operation}")
            self.counts["death_after"] += 1
            self._local.die_after = operation  # the call runs; its answer never arrives
            return None
        if self.chance("error"):
            log.warning("fault: %s fails after its retries", operation)
            return _throttled(model)
        return None

    def _apply(self, fault: str, operation: str, model: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        """A scripted fault at this call."""
        log.warning("fault: %s at %s (scripted)", fault, operation)
        if fault == "death_before":
            raise LambdaDeath(f"died before {operation}")
        if fault == "error":
            return _throttled(model)
        if fault == "death_after":
            self._local.die_after = operation
        else:  # twice
            self._local.twice = True
        return None

    def after_call(self, model: Any, **_: Any) -> None:
        operation = getattr(self._local, "die_after", None)
        if operation is not None and self.active():
            self._local.die_after = None
            log.warning("fault: the Lambda dies after %s", operation)
            raise LambdaDeath(f"died after {operation}")

    def needs_retry(self, attempts: int, response: Any = None, caught_exception: Any = None,
                    **_: Any) -> int | None:
        """Answering 0 makes botocore send the request again at once, as its retry handler does
        after a lost answer: the first attempt's effect stays, its answer is discarded."""
        if attempts != 1 or caught_exception is not None or response is None or not self.active():
            return None
        if getattr(self._local, "twice", False):
            self._local.twice = False
            return 0
        if self.chance("twice"):
            log.warning("fault: a call runs twice (its first answer lost)")
            return 0
        return None


def _throttled(model: Any) -> tuple[AWSResponse, dict[str, Any]]:
    code, status = _THROTTLED.get(model.service_model.service_name, _DEFAULT_THROTTLED)
    parsed = {
        "Error": {"Code": code, "Message": "Rate exceeded (injected fault)"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}, "MaxAttemptsReached": True,
                             "RetryAttempts": 3},
    }
    return AWSResponse("https://fault.invalid/", status, {}, None), parsed


SCRIPTED = ("error", "death_before", "death_after", "twice")
_installed: FaultInjector | None = None
_install_lock = threading.Lock()


def _before_call(**kwargs: Any) -> Any:
    return _installed.before_call(**kwargs) if _installed is not None else None


def _after_call(**kwargs: Any) -> None:
    if _installed is not None:
        _installed.after_call(**kwargs)


def _needs_retry(**kwargs: Any) -> Any:
    return _installed.needs_retry(**kwargs) if _installed is not None else None


def install(rates: FaultRates) -> FaultInjector:
    """Inject `rates` into every boto3 client created from now on (in this process)."""
    global _installed
    with _install_lock:
        if not any(entry[1] is _before_call for entry in BUILTIN_HANDLERS):
            BUILTIN_HANDLERS.append(("before-call", _before_call))
            BUILTIN_HANDLERS.append(("after-call", _after_call))
            BUILTIN_HANDLERS.append(("needs-retry", _needs_retry))
        _installed = FaultInjector(rates)
        log.warning("fault injection on: %s", rates)
        return _installed


def uninstall() -> None:
    """No more faults (the hooks stay, doing nothing)."""
    global _installed
    with _install_lock:
        _installed = None


def current() -> FaultInjector | None:
    return _installed


def from_environment(env: dict[str, str] | None = None) -> FaultInjector | None:
    """Install the faults `WEBIM_FAULTS` asks for; None (and nothing installed) when unset."""
    text = (env if env is not None else dict(os.environ)).get(ENV, "").strip()
    if not text:
        return None
    rates = FaultRates.parse(text)
    return install(rates) if rates.any else None


@contextlib.contextmanager
def invocation() -> Iterator[None]:
    """The invoker's scope for one handler call: the app's calls inside meet the faults."""
    injector = _installed
    if injector is None:
        yield
        return
    with injector.invocation():
        yield


def gone(connection_id: str) -> bool:
    """For the callback API: whether the app's push to this live connection is answered 410."""
    injector = _installed
    return injector is not None and injector.gone(connection_id)


def chance(kind: str, app_only: bool = False) -> bool:
    """For the stack's own fault points (`dup_job`, `gone`): whether `kind` strikes now.
    `app_only`: only for a call the app makes inside an invocation."""
    injector = _installed
    if injector is None or (app_only and not injector.active()):
        return False
    return injector.chance(kind)
