"""Test doubles: stand-ins for the deployed code's ports, kept out of the deployed package."""
from __future__ import annotations

from chalicelib.errors import ConnectionGoneError


class RecordingSender:
    """An in-memory FrameSender for tests: records frames; ids in `gone` answer 410."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.closed: list[str] = []
        self.gone: set[str] = set()

    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        if connection_id in self.gone:
            raise ConnectionGoneError(connection_id)
        self.sent.append((connection_id, data))

    def close(self, endpoint: str, connection_id: str) -> None:
        self.closed.append(connection_id)
        self.gone.add(connection_id)
