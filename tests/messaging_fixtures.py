"""Builds the messaging services on moto with recorded pushes and a counted/faulted session."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3

from chalicelib.logic.protocol import Caller
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.doubles import RecordingSender


@dataclass
class CallLog:
    """Every AWS call a session makes, by operation, via botocore's event hooks."""

    calls: list[str] = field(default_factory=list)
    fail_at: int | None = None  # die on this call number (1-based): a crash between two calls
    error_at: int | None = None  # this call fails (throttled past its retries, say)
    error_calls: int = 1  # ...and so many calls from it (the same call tried again fails again)

    def hook(self, event_name: str, **_: Any) -> None:
        service, operation = event_name.split(".")[1:3]
        self.calls.append(f"{service}.{operation}")
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise Crash(f"injected crash before call {self.fail_at} ({operation})")
        if self.error_at is not None and self.error_at <= len(self.calls) < self.error_at + self.error_calls:
            raise RuntimeError(f"injected failure of call {len(self.calls)} ({operation})")


class Crash(BaseException):
    """The process dies here: nothing catches it (a failed call would be an Exception)."""


def counted_session(log: CallLog) -> boto3.session.Session:
    session = boto3.session.Session()
    session.events.register("before-call.*.*", log.hook)
    return session


class LoggedSender(RecordingSender):
    """Records pushes; each counts (and can crash) as the callback API call it stands for."""

    def __init__(self, log: CallLog) -> None:
        super().__init__()
        self._log = log

    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        self._log.hook("before-call.apigatewaymanagementapi.PostToConnection")
        super().send(endpoint, connection_id, data)


@dataclass
class Harness:
    services: Services
    sender: RecordingSender
    log: CallLog

    def connect(self, connection_id: str, identity: Identity) -> None:
        self.services.sessions.open(connection_id, identity, "http://recorded")

    def frame(self, connection_id: str, **frame: Any) -> None:
        self.services.sessions.receive(connection_id, json.dumps(frame))

    def frames_to(self, connection_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        frames = [json.loads(data) for cid, data in self.sender.sent if cid == connection_id]
        return [f for f in frames if kind is None or f.get("type") == kind]

    def caller(self, connection_id: str) -> Caller:
        record = self.services.router.lookup(connection_id)
        assert record is not None
        return Caller(record)


def build_harness(env: dict[str, str], handshake_grace: int = 0) -> Harness:
    """Connections here are "old" at once (no handshake grace) unless asked otherwise."""
    log = CallLog()
    sender = LoggedSender(log)
    env = {**env, "HANDSHAKE_GRACE_SECONDS": str(handshake_grace)}
    services = Services.from_env(env, session=counted_session(log), sender=sender)
    return Harness(services, sender, log)
