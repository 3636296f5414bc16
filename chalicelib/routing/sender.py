"""Delivery behind a write-only port: send a frame to a connection, or close it.

Two adapters, one per transport: `CallbackApiSender` for WebSocket connections (API Gateway's
`@connections` callback API, on AWS and, pointed at loopback, on the local stack), and
`MailboxSender` for long-poll connections. "Gone" (a 410, a missing mailbox) becomes
`ConnectionGoneError`, a domain fact the router handles in one place.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.errors import ConnectionGoneError
from chalicelib.observability import module_logger
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.mailbox import MailboxGone, MailboxTable

log = module_logger(__name__)  # JSON, with the invocation's keys


class FrameSender(Protocol):
    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        """Deliver one text frame; raise ConnectionGoneError if the connection is gone."""

    def close(self, endpoint: str, connection_id: str) -> None:
        """Close the connection; a connection already gone is not an error."""


class CallbackApiSender:
    """One `apigatewaymanagementapi` client per endpoint, created once per container."""

    def __init__(self, client_factory: Callable[[str], Any]) -> None:
        self._client_factory = client_factory  # endpoint URL -> boto3 client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, endpoint: str) -> Any:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._clients[endpoint] = self._client_factory(endpoint)
            return client

    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        try:
            self._client(endpoint).post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as error:
            if _is_gone(error):
                raise ConnectionGoneError(connection_id) from error
            raise

    def close(self, endpoint: str, connection_id: str) -> None:
        try:
            self._client(endpoint).delete_connection(ConnectionId=connection_id)
        except ClientError as error:
            if not _is_gone(error):
                raise


def _is_gone(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(code == "GoneException" or status == 410)


class MailboxSender:
    """The FrameSender of long-poll connections: a push lands in the connection's mailbox,
    where the held poll (or the next one) finds it; then the connection's doorbell rings to
    wake a held poll at once."""

    def __init__(self, mailboxes: MailboxTable, doorbells: DoorbellQueues | None = None) -> None:
        self._mailboxes = mailboxes
        self._doorbells = doorbells

    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        try:
            appended = self._mailboxes.append(connection_id, data.decode("utf-8"))
        except MailboxGone:
            raise ConnectionGoneError(connection_id) from None
        if self._doorbells is not None and appended is not None:
            try:
                if not self._doorbells.ring(connection_id, appended.number, appended.frame):
                    # closed between the append and the ring (a tab going away): nobody waits
                    log.info("long-poll doorbell of %s is gone (the connection closed)", connection_id)
            except Exception as error:  # the frame is stored: the poll's safety-net look finds it
                log.warning("long-poll doorbell of %s did not ring: %s", connection_id, error)

    def close(self, endpoint: str, connection_id: str) -> None:
        self._mailboxes.delete(connection_id)
        if self._doorbells is not None:
            self._doorbells.delete(connection_id)
