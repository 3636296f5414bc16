"""A client session over WebSocket: open, one frame at a time, close.

The transport-specific part is only how answers leave: over WebSocket they are pushed back
through the callback API to the connection that sent the frame.
"""
from __future__ import annotations

from chalicelib.errors import UnauthorizedError, WebimError
from chalicelib.logic.limits import Limits
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import Caller, ProtocolCore, frame_id
from chalicelib.observability import bind, module_logger
from chalicelib.principal import Identity
from chalicelib.routing.router import Router

log = module_logger(__name__)  # JSON, with the invocation's keys


class WebSocketSessions:
    def __init__(self, core: ProtocolCore, router: Router, presence: PresenceService,
                 limits: Limits | None = None) -> None:
        self._core = core
        self._router = router
        self._presence = presence
        self._limits = limits

    def open(self, connection_id: str, identity: Identity, endpoint: str) -> None:
        """`identity` was authenticated from the handshake: every frame of this connection
        acts as it, whatever the frames say.

        Raising refuses the handshake, and then nothing of the connection may stay: API
        Gateway sends no `$disconnect` for a refused handshake, so a registration left behind
        would show the identity online (and be pushed to) with nothing connected. The limit
        is checked before anything is written; a failure after `register` is undone here.
        """
        if self._limits is not None:
            self._limits.admit_connection(identity)  # rate_limited: refused, nothing written
        record = self._router.register(connection_id, identity, endpoint, live_seconds=self._presence.window)
        try:
            self._presence.live(record)
        except Exception:
            self._presence.forget_unopened(record)
            raise

    def receive(self, connection_id: str, text: str) -> None:
        record = self._router.lookup(connection_id)
        if record is None:
            # Expired or never registered: no identity to act as, so nothing is processed.
            raise UnauthorizedError("unknown connection")
        bind(identity=record.identity.key)
        try:
            for frame in self._core.handle_text(Caller(record), text):
                self._router.push(record, frame)
        except Exception:
            # A failed AWS call (after its retries) or a bug: the client hears of it and may
            # retry (sends are idempotent); nothing past the failure point happened.
            log.exception("frame failed")
            self._router.push(record, WebimError("an internal error occurred", ref=frame_id(text)).to_frame())

    def close(self, connection_id: str) -> None:
        record = self._router.lookup(connection_id)
        if record is not None:
            self._router.unregister(record)
            self._presence.gone(record.identity)
