"""The long poll's rings (protocol §2b, version 4), the client's half: every
tests/long_poll_rings/*.json run against webim_client/rings.py. Node runs the same files against
frontend/lib/rings.js (frontend/tests/rings.test.mjs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from webim_client.rings import Rings, Taken

FOLDER = Path(__file__).parent / "long_poll_rings"
CASES = sorted(path for path in FOLDER.iterdir() if path.name != "README.md")


def encoded(answer: Any) -> Any:
    """A case's wait answer as the server writes it: an object `Body` (and its object `f`) as JSON text."""
    if isinstance(answer, dict):
        return {key: (body_text(value) if key == "Body" else encoded(value)) for key, value in answer.items()}
    if isinstance(answer, list):
        return [encoded(item) for item in answer]
    return answer


def body_text(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    ring = {**body, "f": json.dumps(body["f"])} if isinstance(body.get("f"), dict) else body
    return json.dumps(ring)


def run_step(rings: Rings, step: dict[str, Any]) -> Taken | None:
    if "wait" in step:
        return rings.waited(encoded(step["wait"]))
    if "poll" in step:
        return rings.polled(step["poll"]["base"], step["poll"]["frames"])
    rings.released(step["released"])
    return None


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_ring_case(path: Path) -> None:
    assert path.suffix == ".json", f"{path.name}: only cases and the README belong here"
    case = json.loads(path.read_text())
    rings = Rings(case.get("next", 1))
    for index, step in enumerate(case["steps"]):
        taken = run_step(rings, step)
        expect = step.get("expect", {})
        where = f"{path.name} step {index + 1}"
        if "frames" in expect:
            assert taken is not None and taken.frames == expect["frames"], where
        if "poll" in expect:
            assert taken is not None and taken.poll == expect["poll"], where
        if "next" in expect:
            assert rings.next == expect["next"], where
        if "owes" in expect:
            assert rings.owes == expect["owes"], where


def test_the_cases_cover_every_kind_of_step() -> None:
    kinds = {next(k for k in ("wait", "poll", "released") if k in step)
             for path in CASES for step in json.loads(path.read_text())["steps"]}
    assert kinds == {"wait", "poll", "released"} and len(CASES) >= 8
