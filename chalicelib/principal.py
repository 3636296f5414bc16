"""Who someone is: a value shared by every layer (so it lives below all of them).

A visitor (an identity this system minted for an anonymous browser) and a user (someone the
host website logged in) are told apart by `kind`, never by the shape of the id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["visitor", "user"]
KINDS: tuple[Kind, ...] = ("visitor", "user")
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class Identity:
    kind: Kind
    id: str

    @property
    def key(self) -> str:
        """The storage key: kind and id together, so a visitor and a user never collide.

        Unambiguous although ids may hold any printable character, `:` and `#` included:
        `kind` is one of KINDS, none of which contains `:`, so the first `:` always ends it
        and everything after it is the id (`from_key` splits there). Keys that put this one
        beside other variable parts escape it (storage/messages.py, `_idempotency_key`)."""
        return f"{self.kind}:{self.id}"

    @classmethod
    def from_key(cls, key: str) -> Identity:
        kind, _, id_ = key.partition(":")  # the first `:`: kinds have none, ids may
        if kind not in KINDS or not id_:
            raise ValueError(f"not an identity key: {key!r}")
        return cls(kind, id_)

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}


def valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.isprintable()
        and not value.isspace()
    )
