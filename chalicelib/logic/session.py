"""A client session over WebSocket: open, one frame at a time, close.

The transport-specific part is only how answers leave: over WebSocket they are pushed back
through the callback API to the connection that sent the frame.
"""
from __future__ import annotations

from chalicelib.errors import BannedError, ConnectionGoneError, UnauthorizedError, WebimError
from chalicelib.logic.limits import Limits
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import Caller, ProtocolCore, frame_id
from chalicelib.observability import bind, module_logger
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.bans import BansTable

log = module_logger(__name__)  # JSON, with the invocation's keys


class WebSocketSessions:
    def __init__(self, core: ProtocolCore, router: Router, presence: PresenceService,
                 limits: Limits | None = None) -> None:
        self._core = core
        self._router = router
        self._presence = presence
        self._limits = limits
        self._bans: BansTable | None = None

    def add_bans(self, bans: BansTable) -> None:
        """Refuse a banned identity's handshake (docs/operator.md)."""
        self._bans = bans

    def open(self, connection_id: str, identity: Identity, endpoint: str) -> None:
        """`identity` was authenticated from the handshake: every frame of this connection
        acts as it, whatever the frames say.

        Raising refuses the handshake, and then nothing of the connection may stay: API
        Gateway sends no `$disconnect` for a refused handshake, so a registration left behind
        would show the identity online (and be pushed to) with nothing connected. The limit
        is checked before anything is written; a failure after `register` is undone here.
        """
        if self._limits is not None:
            self._limits.admit_connection(identity, connection_id)  # rate_limited: refused, nothing written
        record = self._router.new_record(connection_id, identity, endpoint, live_seconds=self._presence.window)
        try:
            self._router.add(record)  # undone below also if it dies half-way (written, answer lost)
            self._presence.live(record)
            # banned (docs/operator.md): checked after the record is written, so a ban that
            # listed the identity's connections before it was there is seen here (refused, undone)
            if self._bans is not None and self._bans.banned(identity):
                raise BannedError("this identity is banned")
        except BaseException:
            # BaseException: also when the invocation is dying (the local stack's fault mode,
            # anything the runtime raises into it): the handshake fails either way, and a record
            # left behind would draw pushes to a connection that never opened. A death that
            # runs no Python at all (a hard kill) still leaves one: the router forgets it at
            # its first push past the handshake grace (410, then the close finds it gone).
            self._presence.forget_unopened(record)
            self._release(identity, connection_id)
            raise

    def receive(self, connection_id: str, text: str, endpoint: str | None = None) -> None:
        """One frame. `endpoint`: the callback endpoint of this invocation's API, for
        answering a connection that has no record."""
        record = self._router.lookup(connection_id)
        if record is None:
            # Expired, dropped (a push met 410) or never registered: no identity to act as,
            # so nothing is processed. Never silence: the client is told and the socket is
            # closed, so it reconnects (a socket whose record is gone is deaf and mute).
            if endpoint is not None:
                gone = ConnectionGoneError("this connection is closed; reconnect, then sync", ref=frame_id(text))
                self._router.refuse(endpoint, connection_id, gone.to_frame())
            raise UnauthorizedError("unknown connection")
        bind(identity=record.identity.key)
        try:
            answers = self._core.handle_text(Caller(record), text)
            for frame in answers:
                self._router.push(record, frame)
        except Exception:
            # A failed AWS call (after its retries) or a bug: the client hears of it and may
            # retry (sends are idempotent); nothing past the failure point happened.
            log.exception("frame failed")
            answers = [WebimError("an internal error occurred", ref=frame_id(text)).to_frame()]
            self._router.push(record, answers[0])
        if any(frame.get("code") == ConnectionGoneError.code for frame in answers):
            # a ping found the record deleted meanwhile (a $disconnect, a 410 elsewhere): close
            self._router.close(record)

    def close(self, connection_id: str) -> None:
        record = self._router.lookup(connection_id)
        if record is not None:
            self._router.unregister(record)
            self._release(record.identity, connection_id)
            self._presence.gone(record.identity)

    def _release(self, identity: Identity, connection_id: str) -> None:
        """Give the connection's slot back (limits.py). Best effort: a slot left behind is
        reclaimed when it would refuse an open, its connection having no record."""
        if self._limits is not None:
            try:
                self._limits.release_connection(identity, connection_id)
            except Exception as error:
                log.warning("connection slot of %s not released: %s", connection_id, error)
