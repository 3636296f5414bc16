"""The test tiers' markers, held to what a test starts: a test that starts a subprocess stack
(`python -m devstack`, the deploy rehearsal's moto server) must be marked `e2e`, or it fails
when it starts one; tests/browser/ is marked `browser` by its path (conftest.py).
`make test-fast` runs `-m "not e2e and not browser"`."""
from __future__ import annotations

import pytest

_current: list[pytest.Item] = []


def entering(item: pytest.Item | None) -> None:
    """Called by conftest.py around each test's setup and run."""
    _current[:] = [item] if item is not None else []


def require_marker(name: str, what: str) -> None:
    """Refuse to start `what` from a test that lacks the marker `name`."""
    if _current and _current[0].get_closest_marker(name) is None:
        raise RuntimeError(f"{_current[0].nodeid} starts {what}: mark it @pytest.mark.{name} "
                           f"(tests/tiers.py)")
