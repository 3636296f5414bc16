"""The layers' rules that a reading of the source proves (docs/architecture.md, "The four layers").

Stored items cross the storage boundary as typed records (`Membership`, `Message`, `GroupHead`,
...): the logic layer reads their fields, never a stored attribute name. This test scans every
module of chalicelib/logic for a read by name (`x["name"]`, `x.get("name")`, `x.pop("name")`,
`"name" in x`) of any attribute a storage module reads from or writes into an item. The frames
and jobs logic handles are dicts and stay so: `frames.py` (the typed requests, which read the
client's frames) is the one module that reads frames by name, and a few job and frame fields
share a name with a stored attribute (`WIRE_FIELDS`).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGIC = ROOT / "chalicelib" / "logic"
STORAGE = ROOT / "chalicelib" / "storage"
# reads client frames by name: that is what it is for
FRAME_PARSERS = {"frames.py"}
# fields of jobs (SQS bodies) and frames that logic reads by name and that a stored item also
# holds under the same name
WIRE_FIELDS = {"conversation_id", "seq", "identity", "last_seen"}


def reads_by_name(source: str) -> list[tuple[str, int]]:
    """(name, line) of every read of a dict by a constant string key in `source`."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            found.append((node.slice.value, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "pop") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
              and isinstance(node.left.value, str) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)):
            found.append((node.left.value, node.lineno))
    return found


def item_keys(source: str) -> set[str]:
    """The keys of every `"Item": {...}` literal (what a Put writes)."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "Item" and isinstance(value, ast.Dict):
                    keys |= {k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return keys


def stored_attributes() -> set[str]:
    """Every attribute name the storage modules read from items or put into them (DynamoDB's
    own CamelCase response fields and expression placeholders left out)."""
    names: set[str] = set()
    for module in STORAGE.glob("*.py"):
        source = module.read_text()
        names |= {name for name, _ in reads_by_name(source)} | item_keys(source)
    return {n for n in names if n.isidentifier() and n == n.lower()}


def test_the_stored_attributes_are_found() -> None:
    # the scan sees the storage modules' items: a layout change cannot empty it unnoticed
    assert {"pk", "sk", "peer", "acked_seq", "read_seq", "last_time", "writers", "wrote", "role", "joined_seq",
            "title", "members_count", "sender", "text", "expires_at", "live_until"} <= stored_attributes()


def test_the_scan_finds_every_kind_of_read() -> None:
    source = 'a = m["peer"]\nb = m.get("wrote")\nc = "via_visitor" in m\nd = m.pop("told_seq", 0)\nm["x"] = 1\n'
    assert reads_by_name(source) == [("peer", 1), ("wrote", 2), ("via_visitor", 3), ("told_seq", 4)]


def test_logic_reads_no_stored_attribute_name() -> None:
    stored = stored_attributes() - WIRE_FIELDS
    offending = [
        f"{module.name}:{line} reads {name!r}"
        for module in sorted(LOGIC.glob("*.py")) if module.name not in FRAME_PARSERS
        for name, line in reads_by_name(module.read_text()) if name in stored
    ]
    assert offending == [], "logic reads stored items by attribute name; use the storage records' fields"
