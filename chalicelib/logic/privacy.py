"""The one privacy rule for signals about a person (docs/presence.md#privacy, identity.md).

A *signal* is anything that tells the other members of a conversation what a person does
there or whether it is around: `delivered` (it received), `seen` (it read), `typing`, group
`receipts`, the list's `peer_acked_seq` / `peer_read_seq`, and presence. Every one of them is
decided here, from the actor's own membership of that conversation, which each path already
holds (the cursor write returns it, the typing write returns it, the presence push reads it):
no extra read.

    may_reveal(actor, membership) is True only when
      - the actor has itself written in the conversation (`wrote`), or
      - the actor is a user (a user's presence is public) in a conversation that is its own,
        not one carried over from a visitor it once was (`via_visitor`) in which that visitor
        never wrote: telling that peer would show it who the visitor became.

So a visitor is never watched by someone who merely wrote to it (nor by a group it was put in
and never wrote to), and a stranger never learns which user a visitor became.

A block (protocol.md §15) is read here too, and only here: the blocker's side of the 1:1
carries `blocked`, the blocked peer's side `blocked_by_peer` (one transaction writes both), so
no signal about either passes to the other while the block stands, whichever way it would go,
and every signal that passes this gate stops at once, with no check of its own.
"""
from __future__ import annotations

from chalicelib.principal import Identity
from chalicelib.storage.members import Membership


def may_reveal(actor: Identity, membership: Membership | None) -> bool:
    """Whether signals about `actor` in the conversation of `membership` (the actor's own) may
    be shown to the conversation's other members."""
    if membership is None or membership.blocked or membership.blocked_by_peer:
        return False
    if membership.wrote:
        return True
    return actor.kind == "user" and membership.via_visitor is None
