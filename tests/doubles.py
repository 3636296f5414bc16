"""Test doubles: stand-ins for the deployed code's ports, kept out of the deployed package."""
from __future__ import annotations

from chalicelib.errors import ConnectionGoneError


class RecordingSender:
    """An in-memory FrameSender for tests: records frames; ids in `gone` answer 410; an id in
    `failing` fails that many more pushes (an error past the SDK's retries)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.closed: list[str] = []
        self.gone: set[str] = set()
        self.failing: dict[str, int] = {}

    def send(self, endpoint: str, connection_id: str, data: bytes) -> None:
        if connection_id in self.gone:
            raise ConnectionGoneError(connection_id)
        if self.failing.get(connection_id, 0) > 0:
            self.failing[connection_id] -= 1
            raise RuntimeError(f"injected push failure to {connection_id}")
        self.sent.append((connection_id, data))

    def close(self, endpoint: str, connection_id: str) -> None:
        self.closed.append(connection_id)
        self.gone.add(connection_id)
