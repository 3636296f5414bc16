"""The composition root: builds the services once per container from the environment.

Nothing here runs at import time, so `chalice package` can import app.py without any AWS
configuration; the first event builds the services and later events reuse them.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import boto3
from botocore.config import Config

from chalicelib.logic.erasure import Erasure
from chalicelib.logic.export import Export
from chalicelib.logic.fanout import GROUP_FANOUT, GroupFanout
from chalicelib.logic.groups import Groups
from chalicelib.logic.host_issuers import parse_host_issuers
from chalicelib.logic.identity import Authenticator
from chalicelib.logic.jobs import JobRunner
from chalicelib.logic.limits import Limits, Rate, Rates
from chalicelib.logic.linking import Linking
from chalicelib.logic.longpoll import LongPollSessions, LongPollTiming, WaitLine
from chalicelib.logic.media import Media, PhotoTerms
from chalicelib.logic.messaging import ACK_CHECK, Messaging, MessagingParts
from chalicelib.logic.operator import Operator
from chalicelib.logic.presence import PRESENCE_PUSH, PRESENCE_SETTLE, PresenceService
from chalicelib.logic.protocol import ProtocolCore
from chalicelib.logic.reports import Reports
from chalicelib.logic.session import WebSocketSessions
from chalicelib.logic.typing_signal import TypingSignals
from chalicelib.routing.router import Router
from chalicelib.routing.sender import CallbackApiSender, FrameSender, MailboxSender
from chalicelib.settings import Settings
from chalicelib.storage.bans import BansTable
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.erasure import ErasureStore
from chalicelib.storage.groups import GroupsStore
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.mailbox import MailboxTable
from chalicelib.storage.media import MediaBucket
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import MessagesTable
from chalicelib.storage.presence import PresenceTable
from chalicelib.storage.rate_limits import RateLimitTable
from chalicelib.storage.reports import ReportsTable
from chalicelib.storage.secrets import SecretStore
from chalicelib.tracing import running_on_lambda

# Short timeouts and standard retries with backoff: a throttled call is retried a few times,
# a hung one does not hold a Lambda (or a long poll) for a minute. A Lambda container runs one
# event at a time, but one process may run many handlers at once (the local stack's thread
# pool, fanning pushes out): a pool that small would discard connections and warn.
_BOTO_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 4},
                      max_pool_connections=128)
# Long-poll doorbells: the ring is how a waiting client gets the frame, so it gets a second
# short try; a ring lost anyway is found at the client's next gap or heartbeat poll (the frame
# is in the mailbox), and a message's by its retransmission a few seconds later.
_RING_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "max_attempts": 2},
                      max_pool_connections=128)
_DOORBELL_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 3},
                          max_pool_connections=128)


@dataclass(frozen=True)
class Services:
    settings: Settings
    authenticator: Authenticator
    linking: Linking
    router: Router
    sessions: WebSocketSessions
    long_poll: LongPollSessions
    presence: PresenceService
    messaging: Messaging
    jobs: JobRunner
    jobs_queue: JobsQueue
    limits: Limits
    groups: Groups
    fanout: GroupFanout
    operator: Operator  # operator tools and the ban gate (docs/operator.md)
    erasure: Erasure  # an identity's erasure, a step per request (docs/operator.md)
    export: Export  # everything stored about an identity (docs/operator.md)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, session: boto3.session.Session | None = None,
                 sender: FrameSender | None = None, limits_clock: Callable[[], float] = time.time) -> Services:
        """`session` and `sender` let tests count or fault the AWS calls and record pushes;
        `limits_clock` moves the rate limits to a new window without waiting."""
        settings = Settings.from_env(env)
        aws = session or boto3.session.Session()
        dynamodb = aws.resource("dynamodb", config=_BOTO_CONFIG)
        sender = sender or CallbackApiSender(
            lambda endpoint: aws.client("apigatewaymanagementapi", endpoint_url=endpoint, config=_BOTO_CONFIG)
        )
        connections_table = dynamodb.Table(settings.connections_table)
        mailboxes = MailboxTable(connections_table)
        doorbells = None
        if settings.long_poll_queue_prefix:
            # same account and region as the jobs queue: URLs are built, not looked up
            doorbells = DoorbellQueues(aws.client("sqs", config=_DOORBELL_CONFIG),
                                       aws.client("sqs", config=_RING_CONFIG),
                                       settings.jobs_queue_url.rsplit("/", 1)[0],
                                       settings.long_poll_queue_prefix)
        router = Router(
            ConnectionsTable(connections_table),
            sender,
            settings.connection_ttl_seconds,
            long_poll_sender=MailboxSender(mailboxes, doorbells),
            handshake_grace_seconds=settings.handshake_grace_seconds,
        )
        members = MembersTable(dynamodb.Table(settings.members_table))
        messages_table = dynamodb.Table(settings.messages_table)
        retention = settings.message_retention_days * 86400  # seconds; 0: messages are kept
        limits = Limits(
            RateLimitTable(messages_table), Rates(
                mint=Rate(settings.visitor_mint_limit, settings.visitor_mint_window_seconds),
                send=Rate(settings.send_limit, settings.send_window_seconds),
                presence_pull=Rate(settings.presence_pull_limit, settings.presence_pull_window_seconds),
                upload=Rate(settings.upload_limit, settings.upload_window_seconds),
                report=Rate(settings.report_limit, settings.report_window_seconds)),
            max_connections=settings.max_connections_per_identity,
            clock=limits_clock,
            slots=PresenceTable(connections_table),
        )
        jobs_queue = JobsQueue(aws.client("sqs", config=_BOTO_CONFIG), settings.jobs_queue_url)
        groups_store = GroupsStore(messages_table, dynamodb.Table(settings.members_table), retention)
        fanout = GroupFanout(groups_store, PresenceTable(connections_table), router, jobs_queue)
        media = _media(settings, aws, MessagesTable(messages_table, settings.members_table, retention), members, limits)
        messaging = Messaging(MessagingParts(
            MessagesTable(messages_table, settings.members_table, retention),
            members, router, jobs_queue, limits=limits, groups=groups_store, fanout=fanout, media=media,
        ), settings.ack_timeout_seconds, delete_window_seconds=settings.delete_window_seconds)
        presence = PresenceService(PresenceTable(connections_table), router, members, jobs_queue,
                                   settings.presence_window_seconds, settings.presence_grace_seconds)
        groups = Groups(groups_store, router, settings.group_member_limit, settings.groups_per_identity_limit,
                        fan_out=fanout.start, limits=limits)
        # typing is a rate limit too: `limits_clock` moves its interval on in tests
        typing = TypingSignals(members, router, fanout, settings.typing_interval_seconds, clock=limits_clock)
        authenticator = _authenticator(settings, SecretStore(aws.client("secretsmanager", config=_BOTO_CONFIG)), env)
        # reports (protocol.md §17) live in the members table (storage/reports.py)
        reports = Reports(ReportsTable(dynamodb.Table(settings.members_table), settings.messages_table),
                          MessagesTable(messages_table, settings.members_table, retention), members, limits=limits,
                          media=media)
        core = ProtocolCore(settings.max_frame_bytes, messaging, presence=presence, groups=groups, typing=typing,
                            media=media)
        core.add_reports(reports)
        bans = BansTable(dynamodb.Table(settings.members_table))  # bans live in the members table
        sessions = WebSocketSessions(core, router, presence, limits)
        long_poll = LongPollSessions(core, router, mailboxes, presence, LongPollTiming(
            settings.long_poll_window_seconds, settings.long_poll_heartbeat_seconds), limits=limits,
            waits=None if doorbells is None else WaitLine(doorbells, authenticator, settings.long_poll_wait_url))
        sessions.add_bans(bans)
        long_poll.add_bans(bans)
        operator = Operator(bans, ReportsTable(dynamodb.Table(settings.members_table), settings.messages_table,
                                               settings.report_retention_days * 86400),  # closes set expires_at
                            MessagingParts(MessagesTable(messages_table, settings.members_table, retention), members,
                                           router, jobs_queue, fanout=fanout, media=media),
                            sessions, long_poll)
        erasure_store = ErasureStore(dynamodb.Table(settings.members_table), messages_table, connections_table)
        return cls(
            settings=settings,
            authenticator=authenticator,
            linking=Linking(members),
            router=router,
            sessions=sessions,
            long_poll=long_poll,
            presence=presence,
            messaging=messaging,
            jobs=JobRunner({
                ACK_CHECK: lambda job: messaging.ack_check.run(job, settings.max_retransmits),
                PRESENCE_SETTLE: presence.settle,
                PRESENCE_PUSH: presence.push_job,
                GROUP_FANOUT: fanout.run,
            }),
            jobs_queue=jobs_queue,
            limits=limits,
            groups=groups,
            fanout=fanout,
            operator=operator,
            erasure=Erasure(erasure_store, MessagesTable(messages_table, settings.members_table, retention), members,
                            groups, groups_store, _erasure_bucket(settings, aws), push=operator.push_tombstone),
            export=Export(erasure_store, members, MessagesTable(messages_table, settings.members_table, retention),
                          ReportsTable(dynamodb.Table(settings.members_table), settings.messages_table),
                          bans, PresenceTable(connections_table), media),
        )

    def callback_endpoint(self, domain_name: str, stage: str) -> str:
        """Where to reach a connection opened through `domain_name`/`stage`."""
        return self.settings.callback_url or f"https://{domain_name}/{stage}"


def _media(settings: Settings, aws: boto3.session.Session, messages: MessagesTable, members: MembersTable,
           limits: Limits) -> Media | None:
    """Photos, when the stage has a media bucket. The presigner signs for the origin the browser
    reaches: the local stack's S3 front (path-style), or on AWS the bucket's regional
    virtual-hosted name (also in us-east-1, where the default would be the global one)."""
    if not settings.media_bucket:
        return None
    endpoint = settings.media_endpoint_url
    presign_config = Config(signature_version="s3v4", s3={
        "addressing_style": "path" if endpoint else "virtual", "us_east_1_regional_endpoint": "regional"})
    bucket = MediaBucket(lambda: aws.client("s3", config=_BOTO_CONFIG),
                         lambda: aws.client("s3", endpoint_url=endpoint, config=presign_config),
                         settings.media_bucket)
    return Media(bucket, messages, members, PhotoTerms(settings.media_max_bytes, settings.media_url_seconds,
                                                       settings.upload_slot_seconds), limits=limits)


def _erasure_bucket(settings: Settings, aws: boto3.session.Session) -> MediaBucket | None:
    """The media bucket as an erasure lists and deletes it (no signing)."""
    if not settings.media_bucket:
        return None
    return MediaBucket(lambda: aws.client("s3", config=_BOTO_CONFIG), lambda: aws.client("s3", config=_BOTO_CONFIG),
                       settings.media_bucket)


def _authenticator(settings: Settings, secrets: SecretStore, env: Mapping[str, str]) -> Authenticator:
    """Secrets are read here, once per container."""
    issuers, leeway = parse_host_issuers(secrets.get_json(settings.host_auth_secret_id))
    return Authenticator(
        signing_secret=secrets.get_text(settings.signing_secret_id).encode(),
        host_issuers=issuers,
        leeway_seconds=leeway,
        dev_login=settings.dev_login and not running_on_lambda(env),
    )


_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services.from_env()
        return _services


def install_services(built: Services | None) -> None:
    """Replace the container's services (tests inject instrumented ones; None forgets them)."""
    global _services
    with _lock:
        _services = built
