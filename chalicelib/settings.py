"""Configuration read from the environment, the same names on AWS and on the local stack.

On AWS the values come from `.chalice/config.json` (wired from the `infra/` stack outputs);
the local stack creates the same stack in moto and exports its outputs under the same names.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

# The jobs queue (ack checks, presence, group fan-out) keeps the name it had when it held ack
# checks only: a new name would replace the deployed queue (infra/template.yaml).
DEFAULT_JOBS_QUEUE_NAME = "webim-dev-ack-timeout"


def output_to_env_name(output_key: str) -> str:
    """`JobsQueueUrl` -> `JOBS_QUEUE_URL`: the one rule linking stack outputs to env."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", output_key).upper()


def jobs_queue_name(env: Mapping[str, str] = os.environ) -> str:
    """Read at import time by the SQS decorator, so `chalice package` must be able to call it."""
    return env.get("JOBS_QUEUE_NAME") or DEFAULT_JOBS_QUEUE_NAME


@dataclass(frozen=True)
class Settings:
    connections_table: str
    messages_table: str
    members_table: str
    jobs_queue_url: str
    # Overrides the callback endpoint derived from each WebSocket event (`https://{domain}/{stage}`);
    # the local stack points it at its own `@connections` emulation.
    callback_url: str | None
    signing_secret_id: str
    host_auth_secret_id: str
    # Development login (pick any user name) exists for the local stack only; tracing.py's
    # running_on_lambda() turns it off on AWS whatever this says.
    dev_login: bool = False
    # Long-poll doorbells: SQS queues named <this><connection id> (infra output
    # LongPollQueuePrefix, "webim-<stage>-lp-"), and where clients wait on them (infra output
    # LongPollWaitUrl: the wait API's route). Either unset: no waits, clients only poll.
    long_poll_queue_prefix: str | None = None
    long_poll_wait_url: str | None = None
    # How long msg:N waits for ack:R before the server retransmits, and how many times.
    ack_timeout_seconds: int = 10
    max_retransmits: int = 3
    # A long-poll connection lives this long after its open or its last poll (the waits run no
    # function, so they cannot move it); clients are told to poll at least every heartbeat (two
    # heartbeats may be late or lost before the window ends). Priced in docs/performance.md.
    long_poll_window_seconds: int = 1200
    long_poll_heartbeat_seconds: int = 540
    # Presence: a WebSocket connection counts as live this long after its last ping: 40 minutes,
    # more than the clients' heartbeat (a ping every 36; between them `keepalive` frames, which
    # API Gateway takes itself, unanswered, keep the line); a closed connection is judged after the grace.
    presence_window_seconds: int = 2400
    presence_grace_seconds: int = 5
    # A connection item outlives any API Gateway connection (2 h max) by a margin; TTL cleans up
    # after lost `$disconnect` events, and readers filter on it because TTL deletes late.
    connection_ttl_seconds: int = 3 * 3600
    handshake_grace_seconds: int = 10
    max_frame_bytes: int = 32 * 1024
    # Abuse limits (docs/protocol.md §8 `rate_limited`): at most LIMIT per fixed window of
    # WINDOW seconds; 0 switches a limit off. Visitors minted per source IP (a shared NAT
    # holds many browsers, each mints once); sends and presence pulls per identity (a person
    # types far fewer; a listing page pulls once a minute); connections (WebSocket + long
    # poll) per identity, live ones counted when one more opens (one tab holds the connection).
    visitor_mint_limit: int = 60
    visitor_mint_window_seconds: int = 60
    send_limit: int = 120
    send_window_seconds: int = 60
    presence_pull_limit: int = 30
    presence_pull_window_seconds: int = 60
    max_connections_per_identity: int = 20
    # Photos (protocol.md §14.1): the bucket (infra output MediaBucket; unset: no photos), the
    # origin the browser reaches it at on the local stack (path-style; unset on AWS: the
    # bucket's regional virtual-hosted origin), the largest upload, how long a signed GET and
    # an upload slot live, and upload slots per identity per window.
    media_bucket: str | None = None
    media_endpoint_url: str | None = None
    media_max_bytes: int = 10 * 1024 * 1024
    media_url_seconds: int = 900
    upload_slot_seconds: int = 300
    upload_limit: int = 30
    upload_window_seconds: int = 60
    # Groups (protocol.md §13): members per group, groups per identity. (The clients' batched-ack
    # rule, T and K of protocol.md §13.5, is the clients' own: webim_client and frontend/lib.)
    group_member_limit: int = 1000
    groups_per_identity_limit: int = 200
    # Typing (protocol.md §14.2): at most one `typing` push per sender and conversation per
    # this many seconds (one conditional write per frame decides; a frame inside it is dropped).
    typing_interval_seconds: int = 3
    # Reports (protocol.md §17) per identity per window: far more than a person files, few
    # enough that nobody floods the operator's list.
    report_limit: int = 20
    report_window_seconds: int = 3600
    # Retention: messages (and group events, tombstones) expire this many days after they were
    # sent, by DynamoDB TTL (`expires_at`), and their photos by the media bucket's lifecycle
    # (the same days: the stack's MessageRetentionDays parameter, output to this setting). 0: kept.
    message_retention_days: int = 0
    # A closed report (its item, list entry and photo copy) expires this many days after it was
    # closed (the stack's ReportRetentionDays); an open one never does. 0: kept.
    report_retention_days: int = 0
    # Delete for everyone (protocol.md §16): a sender deletes its own message this long after
    # sending it (48 h, as the big chat apps); a group's owner and admins any message, any time.
    delete_window_seconds: int = 48 * 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def required(name: str) -> str:
            value = env.get(name)
            if not value:
                raise RuntimeError(f"environment variable {name} is not set")
            return value

        # Every int setting may be overridden by its upper-case name (ACK_TIMEOUT_SECONDS, ...);
        # an empty variable means the default.
        numbers = {f.name: int(env[f.name.upper()]) for f in fields(cls)
                   if f.type == "int" and env.get(f.name.upper())}
        return cls(
            connections_table=required("CONNECTIONS_TABLE"),
            messages_table=required("MESSAGES_TABLE"),
            members_table=required("MEMBERS_TABLE"),
            jobs_queue_url=required("JOBS_QUEUE_URL"),
            callback_url=env.get("CALLBACK_URL") or None,
            signing_secret_id=required("SIGNING_SECRET_ID"),
            host_auth_secret_id=required("HOST_AUTH_SECRET_ID"),
            dev_login=env.get("WEBIM_DEV_LOGIN") == "1",
            long_poll_queue_prefix=env.get("LONG_POLL_QUEUE_PREFIX") or None,
            long_poll_wait_url=env.get("LONG_POLL_WAIT_URL") or None,
            media_bucket=env.get("MEDIA_BUCKET") or None,
            media_endpoint_url=env.get("MEDIA_ENDPOINT_URL") or None,
            **numbers,
        )
