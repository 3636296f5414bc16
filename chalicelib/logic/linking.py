"""Linking: a visitor who logs in on the host site brings their conversations along.

The link is recorded on both sides; every conversation the visitor had gains the user as a
member (so the user sees and continues it). The peer's side is marked, so a seller sees
"returning visitor, chatted before", only where the visitor itself wrote: someone who merely
wrote to a visitor never learns who the visitor became (docs/identity.md).
"""
from __future__ import annotations

from typing import Any

from chalicelib.errors import ForbiddenError
from chalicelib.principal import Identity
from chalicelib.storage.members import MembersTable


class Linking:
    def __init__(self, members: MembersTable) -> None:
        self._members = members

    def link(self, user: Identity, visitor: Identity) -> list[str]:
        """Link `visitor` to `user`; returns the conversations carried over. Idempotent."""
        if user.kind != "user" or visitor.kind != "visitor":
            raise ForbiddenError("a visitor links to a logged-in user")
        self._members.link(visitor, user)
        carried = []
        for membership in self._members.conversations(visitor):
            if membership.peer is None:
                continue  # a group: membership there is the group's to change (an event, a roster)
            # where the visitor was, the preview, and whether it wrote there (which decides
            # whether the peer may see the link and presence)
            self._members.carry(user, membership, via_visitor=visitor)
            if membership.wrote:  # never merely because someone wrote to the visitor
                self._members.mark_peer_linked(membership.peer, membership.conversation_id, user)
            carried.append(membership.conversation_id)
        return carried

    def describe_self(self, caller: Identity) -> dict[str, Any]:
        if caller.kind == "visitor":
            user = self._members.linked_user(caller)
            return {"identity": caller.to_json(), "linked_user": user.to_json() if user else None}
        return {"identity": caller.to_json(),
                "linked_visitors": [v.to_json() for v in self._members.linked_visitors(caller)]}

    def describe_peer(self, caller: Identity, peer: Identity) -> dict[str, Any]:
        """What `caller` may know of `peer`: only through conversations they share.

        `chatted_before` lists the caller's conversations with the peer, and with an identity
        linked to it (the visitor the user once was, or the user the visitor became) only where
        that link is shown on the caller's side: the visitor wrote there before linking, or the
        user wrote there since. Otherwise the link stays unknown to the caller.
        """
        mine = [(m, m.peer) for m in self._members.conversations(caller) if m.peer is not None]  # not groups
        related = {peer}
        if peer.kind == "user":
            visitors = set(self._members.linked_visitors(peer))
            related.update(p for m, p in mine if p in visitors and m.shown_link == peer)
        else:
            user = self._members.linked_user(peer)
            if user is not None and any(p == peer and m.shown_link == user for m, p in mine):
                related.add(user)
        return {
            "identity": peer.to_json(),
            "chatted_before": [{"conversation_id": m.conversation_id, "as": p.to_json()}
                               for m, p in mine if p in related],
            "returning_visitor": len(related) > 1,
        }
