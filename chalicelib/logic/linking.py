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
from chalicelib.storage.members import MembersTable, shown_link

# what the user's new membership copies from the visitor's: where they were, the preview, and
# whether the visitor wrote there (which decides whether the peer may see the link and presence)
_CARRIED = ("acked_seq", "read_seq", "last_seq", "last_time", "last_sender", "preview", "wrote")


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
            conversation_id = membership["conversation_id"]
            if "peer" not in membership:
                continue  # a group: membership there is the group's to change (an event, a roster)
            peer = Identity.from_key(membership["peer"])
            cursors = {k: membership[k] for k in _CARRIED if k in membership}
            self._members.join(user, conversation_id, peer, via_visitor=visitor.key, **cursors)
            if membership.get("wrote"):  # never merely because someone wrote to the visitor
                self._members.mark_peer_linked(peer, conversation_id, user)
            carried.append(conversation_id)
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
        mine = [m for m in self._members.conversations(caller) if "peer" in m]  # 1:1 only, not groups
        related = {peer.key}
        if peer.kind == "user":
            visitors = {v.key for v in self._members.linked_visitors(peer)}
            related.update(m["peer"] for m in mine if m["peer"] in visitors and shown_link(m) == peer.key)
        else:
            user = self._members.linked_user(peer)
            if user is not None and any(m["peer"] == peer.key and shown_link(m) == user.key for m in mine):
                related.add(user.key)
        shared = [m for m in mine if m["peer"] in related]
        return {
            "identity": peer.to_json(),
            "chatted_before": [
                {"conversation_id": m["conversation_id"], "as": Identity.from_key(m["peer"]).to_json()}
                for m in shared
            ],
            "returning_visitor": len(related) > 1,
        }
