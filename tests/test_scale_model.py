"""Prod settings follow the scale model (issue 23 point 6): infra/scale_model.py derives the
stage throttles and the REST function's reserved concurrency from the seed's scale, and the
committed prod settings are that derivation, not numbers typed beside it."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from infra import stage_settings
from infra.scale_model import (
    DAY,
    SEED,
    Scale,
    configured_reserved_concurrency,
    peak,
    per_day,
    prod_settings,
    write_reserved_concurrency,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".chalice" / "config.json"

# one kind of traffic at a time, in round numbers the arithmetic below can follow by hand
NEVER = math.inf  # an interval for what does not happen
QUIET = Scale(users=100_000, ws_share=1.0, messages_per_day=0, group_share=0, keepalive_seconds=500,
              ping_seconds=2_000, reconnect_minutes=NEVER, session_hours=NEVER, headroom=2.0, burst_seconds=2.0)


def test_the_committed_prod_settings_are_the_derivation() -> None:
    derived = prod_settings()
    prod = stage_settings.throttling_for("prod")
    assert (prod.rest_rate, prod.rest_burst) == (derived.rest_rate, derived.rest_burst)
    assert (prod.websocket_rate, prod.websocket_burst) == (derived.websocket_rate, derived.websocket_burst)
    assert (prod.wait_rate, prod.wait_burst) == (derived.wait_rate, derived.wait_burst)
    # config.json is static JSON: it holds the derived number (`python infra/scale_model.py --write`)
    assert configured_reserved_concurrency(CONFIG, "prod") == derived.reserved_concurrency
    assert configured_reserved_concurrency(CONFIG, "dev") is None  # a new account has nothing to reserve


def test_the_websocket_throttle_carries_the_models_own_keepalives() -> None:
    """The old prod throttle (1,000/s) was below the keepalive rate of the scale it was for."""
    keepalives_per_second = SEED.ws_users / SEED.keepalive_seconds
    assert keepalives_per_second > 1_000
    assert prod_settings().websocket_rate >= keepalives_per_second * SEED.headroom


def test_keepalives_alone_are_users_over_the_interval_times_headroom() -> None:
    day = per_day(QUIET)
    assert day.keepalive_slots == 100_000 * DAY / 500 and day.pings == 100_000 * DAY / 2_000
    assert day.keepalives == day.keepalive_slots - day.pings  # a ping takes a keepalive's slot
    settings = prod_settings(QUIET)
    assert settings.websocket_rate == 2 * 200  # 100,000 / 500 s = 200/s, x2 headroom
    assert settings.websocket_burst == 2 * 400  # two seconds at the rate
    assert settings.rest_rate == 0 and settings.wait_rate == 0 and settings.reserved_concurrency == 0


def test_long_poll_users_are_held_polls_on_the_wait_api_and_heartbeats_on_rest() -> None:
    lp = replace(QUIET, ws_share=0.0, lp_wait_seconds=20, lp_heartbeat_seconds=250, rest_billed_ms=100)
    busiest, settings = peak(lp), prod_settings(lp)
    assert busiest.websocket == 0
    assert busiest.wait == 100_000 / 20  # 5,000 held polls end each second
    assert busiest.rest == busiest.authorizer == 100_000 / 250  # 400 heartbeats/s, a new token each
    assert (settings.wait_rate, settings.rest_rate) == (10_000, 800)
    assert settings.reserved_concurrency == 800 * 100 / 1000  # Little's law: 800/s x 0.1 s


def test_messages_count_at_their_peak_on_their_senders_transport() -> None:
    busy = replace(QUIET, keepalive_seconds=NEVER, ping_seconds=NEVER, ws_share=0.75, messages_per_day=DAY * 100,
                   lp_wait_seconds=NEVER, lp_heartbeat_seconds=NEVER, peak=3.0)
    busiest = peak(busy)
    frames = 100 * 2 * 3.0  # 100 messages/s on average, a send and an ack each, 3x at the peak
    assert busiest.websocket == pytest.approx(frames * 0.75)
    assert busiest.rest == pytest.approx(frames * 0.25)
    assert busiest.wait == pytest.approx(frames * 0.25, rel=1e-3)  # each frame to a long-poll user ends a hold


def test_a_larger_scale_needs_proportionally_more() -> None:
    small, large = prod_settings(SEED), prod_settings(replace(SEED, users=2 * SEED.users,
                                                              messages_per_day=2 * SEED.messages_per_day))
    for name in ("rest_rate", "websocket_rate", "wait_rate", "reserved_concurrency"):
        assert math.isclose(getattr(large, name), 2 * getattr(small, name), abs_tol=1), name


def test_write_sets_the_prod_reserved_concurrency_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    shutil.copy(CONFIG, config)
    before = json.loads(config.read_text())
    assert write_reserved_concurrency(1234, config)
    after = json.loads(config.read_text())
    assert after["stages"]["prod"]["lambda_functions"]["api_handler"]["reserved_concurrency"] == 1234
    after["stages"]["prod"]["lambda_functions"]["api_handler"]["reserved_concurrency"] = \
        before["stages"]["prod"]["lambda_functions"]["api_handler"]["reserved_concurrency"]
    assert after == before
    assert not write_reserved_concurrency(1234, config)  # already so: the file is left alone


def test_docs_deploy_states_the_derived_prod_settings() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    derived = prod_settings()
    row = (f"| prod | {derived.rest_rate:,} / {derived.rest_burst:,} | {derived.websocket_rate:,} / "
           f"{derived.websocket_burst:,} | {derived.wait_rate:,} / {derived.wait_burst:,} |")
    assert row in text
    assert f"`reserved_concurrency: {derived.reserved_concurrency}`" in text
