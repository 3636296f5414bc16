"""The scale the prod stage is sized for, and the settings derived from it (issue 23 point 6).

Plain data and arithmetic, no AWS: bench/cost.py prices these same counts ("The cost at the
source design's scale" in docs/performance.md), and the deploy takes its prod settings from
`prod_settings()`: the REST, WebSocket and HTTP API (the held poll's wait) stage throttles and
the REST function's reserved concurrency. To size a stage for another load, change the
assumptions (a `Scale(...)`) and rerun (docs/deploy.md, "Sizing"):

    .venv/bin/python infra/scale_model.py            # the derivation, step by step
    .venv/bin/python infra/scale_model.py --write    # and the reserved concurrency into .chalice/config.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"
DAY = 86_400


@dataclass(frozen=True)
class Scale:
    """What the stage must carry. The defaults are the seed's scale (issue 12 point 5)."""

    users: int = 1_000_000  # online at once
    ws_share: float = 0.95  # on WebSocket; the rest on long poll
    messages_per_day: int = 10_000_000  # 1:1
    group_share: float = 0.10  # group messages, as a share of the 1:1 volume
    group_size: int = 20
    keepalive_seconds: float = 540  # a WebSocket keepalive (MOCK route) after this much silence
    keepalive_answered: bool = False  # the route sends no answer: 1 billed message, not 2
    ping_seconds: float = 2_160  # a presence ping (Lambda) at most this often: it takes a keepalive's slot
    reconnect_minutes: float = 110  # planned WebSocket reconnect, before API Gateway's 2 h limit
    lp_wait_seconds: float = 20  # a held poll (HTTP API -> SQS ReceiveMessage, WaitTimeSeconds)
    lp_heartbeat_seconds: float = 540  # a long-poll heartbeat (REST `lp/poll`; settings.py's default)
    session_hours: float = 2.0  # a user's online session
    peers_told: int = 10  # conversations whose peer is told a presence change
    peers_online: float = 0.3  # share of those peers online to receive the push
    peak: float = 3.0  # the busiest second / the average second, for messages
    # client frames per event, for the throttles (bench/cost.py checks the first against the
    # measured exchange): a 1:1 message is the sender's `send` and the receiver's `ack`
    frames_per_message: int = 2
    frames_per_reconnect: int = 3  # $connect, `sync`, `conversations` ($disconnect is no client frame)
    frames_per_lp_session: int = 4  # `lp/open`, `sync` and `conversations` over `lp/send`, `lp/close`
    rest_per_session: int = 1  # a token (a visitor minted, or a host's token exchanged) per session
    rest_billed_ms: float = 100  # the REST function (128 MB arm64) per request, cold starts averaged in
    headroom: float = 2.0  # throttles and concurrency over the busiest second
    burst_seconds: float = 2.0  # a throttle's burst: this many seconds at its rate

    @property
    def keepalive_messages(self) -> int:
        """Billed WebSocket messages of one keepalive: the frame, and its answer if the route answers."""
        return 2 if self.keepalive_answered else 1

    @property
    def ws_users(self) -> float:
        return self.users * self.ws_share

    @property
    def lp_users(self) -> float:
        return self.users * (1 - self.ws_share)


SEED = Scale()


@dataclass(frozen=True)
class Day:
    """Events a day under a scale (what bench/cost.py multiplies by the measured units)."""

    messages: float  # 1:1
    group_messages: float
    keepalive_slots: float  # WebSocket: a keepalive or a presence ping (its pong too) in each
    pings: float  # WebSocket presence pings (a Lambda run), each in a keepalive slot
    reconnects: float  # WebSocket planned reconnects
    sessions: float  # online sessions (each announces online and offline)
    connection_minutes: float  # WebSocket
    lp_waits: float  # held polls: HTTP API requests, each one SQS ReceiveMessage
    lp_heartbeats: float  # REST `lp/poll`, each one authorizer run (a new token)

    @property
    def keepalives(self) -> float:
        """The slots no ping took: the MOCK route's alone."""
        return self.keepalive_slots - self.pings


def per_day(scale: Scale = SEED) -> Day:
    return Day(
        messages=scale.messages_per_day,
        group_messages=scale.messages_per_day * scale.group_share,
        keepalive_slots=scale.ws_users * DAY / scale.keepalive_seconds,
        pings=scale.ws_users * DAY / scale.ping_seconds,
        reconnects=scale.ws_users * DAY / 60 / scale.reconnect_minutes,
        sessions=scale.users * 24 / scale.session_hours,
        connection_minutes=scale.ws_users * DAY / 60,
        lp_waits=scale.lp_users * DAY / scale.lp_wait_seconds,
        lp_heartbeats=scale.lp_users * DAY / scale.lp_heartbeat_seconds,
    )


@dataclass(frozen=True)
class Peak:
    """Requests per second at the busiest second: idle traffic (keepalives, heartbeats, polls,
    reconnects, sessions) is steady with the users online; messages run at `peak` x average."""

    websocket: float  # inbound WebSocket messages (what the stage throttle counts)
    rest: float  # REST requests, every one a run of the REST function
    wait: float  # HTTP API requests (held polls)
    authorizer: float  # the wait route's authorizer runs (its own function, not reserved)


def peak(scale: Scale = SEED) -> Peak:
    day = per_day(scale)
    lp_share = 1 - scale.ws_share
    # client frames of messages: a 1:1 message's send and ack; a group message's send and one ack
    # per other member; each on the transport of whoever sends it
    frames = (day.messages * scale.frames_per_message + day.group_messages * scale.group_size) * scale.peak / DAY
    session_rate = day.sessions / DAY
    return Peak(
        websocket=day.keepalive_slots / DAY + day.reconnects / DAY * scale.frames_per_reconnect
        + frames * scale.ws_share,
        rest=day.lp_heartbeats / DAY + session_rate * lp_share * scale.frames_per_lp_session
        + frames * lp_share + session_rate * scale.rest_per_session,
        # a held poll ends after its wait, or early with a frame: about one per message frame
        wait=day.lp_waits / DAY + frames * lp_share,
        authorizer=day.lp_heartbeats / DAY,
    )


@dataclass(frozen=True)
class ProdSettings:
    """What the prod stage is deployed with (infra/stage_settings.py, .chalice/config.json)."""

    rest_rate: int
    rest_burst: int
    websocket_rate: int
    websocket_burst: int
    wait_rate: int  # the HTTP API (held poll) stage: infra/template.yaml's WaitApiRate / WaitApiBurst
    wait_burst: int
    reserved_concurrency: int  # the REST function (api_handler)


def prod_settings(scale: Scale = SEED) -> ProdSettings:
    """Throttles: the busiest second x headroom, burst `burst_seconds` of it; reserved
    concurrency: REST requests/s at that throttle x the billed seconds of one (Little's law)."""
    busiest = peak(scale)

    def rate(per_second: float) -> int:
        return math.ceil(round(per_second * scale.headroom, 6))  # 400.0000000001 is 400

    def burst(per_second: float) -> int:
        return math.ceil(rate(per_second) * scale.burst_seconds)

    return ProdSettings(
        rest_rate=rate(busiest.rest), rest_burst=burst(busiest.rest),
        websocket_rate=rate(busiest.websocket), websocket_burst=burst(busiest.websocket),
        wait_rate=rate(busiest.wait), wait_burst=burst(busiest.wait),
        reserved_concurrency=math.ceil(rate(busiest.rest) * scale.rest_billed_ms / 1000),
    )


def configured_reserved_concurrency(config: Path = CONFIG, stage: str = "prod") -> int | None:
    functions = json.loads(config.read_text())["stages"][stage].get("lambda_functions", {})
    value = functions.get("api_handler", {}).get("reserved_concurrency")
    return None if value is None else int(value)


def write_reserved_concurrency(value: int, config: Path = CONFIG, stage: str = "prod") -> bool:
    """Set api_handler's reserved concurrency in config.json (one line changes); False if it was already."""
    if configured_reserved_concurrency(config, stage) == value:
        return False
    text = config.read_text()
    stage_at = text.index(f'"{stage}": {{')
    key = '"reserved_concurrency": '
    at = text.index(key, text.index('"api_handler"', stage_at)) + len(key)
    end = at + len(str(configured_reserved_concurrency(config, stage)))
    config.write_text(text[:at] + str(value) + text[end:])  # the file's own layout kept
    return True


def explain(scale: Scale = SEED) -> str:
    busiest, settings = peak(scale), prod_settings(scale)
    return "\n".join([
        f"{scale.users:,} online ({scale.ws_users:,.0f} WebSocket, {scale.lp_users:,.0f} long poll), "
        f"{scale.messages_per_day:,} 1:1 messages a day ({scale.peak:g}x at the peak), headroom {scale.headroom:g}x",
        f"WebSocket inbound {busiest.websocket:,.0f}/s -> rate {settings.websocket_rate:,}, "
        f"burst {settings.websocket_burst:,}",
        f"REST {busiest.rest:,.0f}/s -> rate {settings.rest_rate:,}, burst {settings.rest_burst:,}",
        f"HTTP API (held polls) {busiest.wait:,.0f}/s -> rate {settings.wait_rate:,}, burst {settings.wait_burst:,}",
        f"REST function: {settings.rest_rate:,}/s x {scale.rest_billed_ms:g} ms -> reserved concurrency "
        f"{settings.reserved_concurrency:,}",
        f"authorizer {busiest.authorizer:,.0f}/s (its own function, nothing reserved)",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the reserved concurrency into config.json")
    args = parser.parse_args(argv)
    print(explain())
    if args.write:
        changed = write_reserved_concurrency(prod_settings().reserved_concurrency)
        print(f"{CONFIG}: {'written' if changed else 'already so'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
