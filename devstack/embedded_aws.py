"""Embedded AWS: moto in-process, provisioned from the very same infra/ template.

The stack's outputs become the environment variables the Lambda functions get on AWS, so the
app reads its configuration the same way in both places.
"""
from __future__ import annotations

import copy
import os
import secrets
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws
from moto.cloudformation.models import Stack as CloudFormationStack
from moto.core.botocore_stubber import BotocoreStubber

from chalicelib.settings import output_to_env_name
from devstack import moto_queries, moto_speedups, moto_transactions

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"
REGION = "us-east-1"
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # The local stack never talks to real AWS, nor reads a developer's ~/.aws.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}

_serialize_lock = threading.RLock()
moto_lock = _serialize_lock  # taken by who calls moto's backends directly (the SQS event source)
_original_process_request = BotocoreStubber.process_request


def _serialized_process_request(self: BotocoreStubber, request: Any) -> Any:
    # A waiting SQS ReceiveMessage (a held long poll's doorbell) would hold the lock, and so
    # the whole stack, for its wait: it runs unlocked (moto's queue guards itself with a
    # Condition, and a send to it wakes it).
    if request.headers.get("X-Amz-Target") in (b"AmazonSQS.ReceiveMessage", "AmazonSQS.ReceiveMessage"):
        import json  # noqa: PLC0415  (only for this rare path)

        if int(json.loads(request.body or b"{}").get("WaitTimeSeconds") or 0) > 0:
            return moto_speedups.process_request(self, request)
    with _serialize_lock:
        return moto_speedups.process_request(self, request)  # moto's, or its fast path


def serialize_moto_calls() -> None:
    """Run one moto request at a time, as DynamoDB runs each conditional write atomically.

    moto checks a condition and then writes in plain Python; two handler threads could
    interleave between the two. The GIL already allows no parallelism, so this costs nothing.
    Requests that moto does not answer (the local callback API) pass through unlocked.
    """
    BotocoreStubber.process_request = _serialized_process_request  # type: ignore[method-assign]


def fake_credentials(env: MutableMapping[str, str] = os.environ) -> None:
    env.update(_FAKE_ENV)


def mint_credentials(env: MutableMapping[str, str] = os.environ) -> None:
    """Fresh random credentials for this process: moto accepts any, and the local callback API
    accepts only signatures made with these (nobody else on the machine knows them)."""
    env.update({
        "AWS_ACCESS_KEY_ID": "ASIALOCAL" + secrets.token_hex(6).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_SESSION_TOKEN": secrets.token_urlsafe(30),
    })


_ORIGINAL_PARSE_TEMPLATE = CloudFormationStack.parse_template
_parsed_templates: dict[str, dict[str, Any]] = {}


def _parse_template_once(template: str) -> dict[str, Any]:
    """moto parses a stack's template (YAML, in pure Python) at every CreateStack: half of a
    provision, once per test that provisions. The same text gives the same dict: parse it once
    per process, and hand each stack its own copy."""
    parsed = _parsed_templates.get(template)
    if parsed is None:
        parsed = _parsed_templates[template] = _ORIGINAL_PARSE_TEMPLATE(template)
    return copy.deepcopy(parsed)


class EmbeddedAws:
    """Starts moto for the whole process and creates the infra stack in it."""

    def __init__(self, stage: str = "local") -> None:
        self.stage = stage
        self._mock = mock_aws()

    def start(self) -> None:
        fake_credentials()
        mint_credentials()
        serialize_moto_calls()
        moto_transactions.install()  # sends stay flat however many messages are stored
        moto_speedups.install()  # the same answers for less CPU per call
        moto_queries.install()  # a Query reads its partition, not the whole table
        self._mock.start()

    def stop(self) -> None:
        self._mock.stop()

    def provision(self, template: Path = TEMPLATE) -> dict[str, str]:
        """Create the infra stack; return its outputs as environment variables."""
        CloudFormationStack.parse_template = staticmethod(_parse_template_once)  # type: ignore[method-assign]
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        stack_name = f"webim-{self.stage}"
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=template.read_text(),
            Parameters=[
                {"ParameterKey": "Stage", "ParameterValue": self.stage},
                {"ParameterKey": "WithCdn", "ParameterValue": "false"},
                {"ParameterKey": "WithSecrets", "ParameterValue": "false"},
                {"ParameterKey": "WithAlarms", "ParameterValue": "false"},  # moto: no CloudWatch alarms
                {"ParameterKey": "WithWaitApi", "ParameterValue": "false"},  # served by devstack/wait_api.py
            ],
        )
        stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack {stack_name} is {stack['StackStatus']}")
        return {output_to_env_name(o["OutputKey"]): o["OutputValue"] for o in stack.get("Outputs", [])}
