"""The whole deploy of one stage, and its removal: `make deploy STAGE=dev`, `make destroy STAGE=dev`.

    python infra/deploy.py deploy --stage dev [--region eu-west-1] [--parameter Key=Value ...]
                                  [--demo] [--skip-smoke]
    python infra/deploy.py destroy --stage dev

`deploy`, in order (each step a function below, docs/deploy.md):
 1. credentials (STS GetCallerIdentity) and the deploy venv of the Lambda runtime's Python
    (infra/runtime.py: python3.13; chalice runs in it, in child processes); the account's Lambda
    concurrency limit against what the stage reserves (GetAccountSettings); the stage's lock
    (DeployLock: one deploy or destroy of a stage at a time, held to the end);
 2. the infra stack `webim-<stage>` (infra/template.yaml): CreateStack or UpdateStack, waiting
    for it (not a change set: moto leaves a change-set stack without outputs). A stack whose
    create failed (ROLLBACK_COMPLETE) is deleted and created anew; before a create, leftovers of
    the stage's fixed names are removed when they hold nothing, or named (clear_orphans); a
    create runs with the tables' deletion protection off and an update switches it on;
 3. its outputs into `.chalice/config.json` (infra/wire_config.py);
 4. the deploy state `.chalice/deployed/<stage>.json` restored from the stage's private state
    bucket (a local one of another region is not used); the functions' push permission scoped
    to the stage's WebSocket API (the policy files' placeholder replaced,
    infra/stage_settings.py); the functions' roles `webim-<stage>-<region>-...` made or brought
    up to date (infra/roles.py: the policy files as their inline policies, the stack's
    permissions boundary; chalice manages no role, its names are account-wide) and wired into
    config.json; `chalice deploy`, and the state saved back, also after a failed deploy. A
    first deploy has no API to name yet: it scopes after `chalice deploy` and puts the roles'
    policies again;
 5. the infra stack told the deployed API ids (WebSocketApiId, RestApiId: its WebSocket alarms,
    dashboard graph and WAF association name them), once, after a first deploy;
    SQS partial batch responses on the event source (chalice has no option for it), API
    Gateway's own answers in the documented error shape (infra/gateway_responses.py), the
    WebSocket `keepalive` route taken by API Gateway itself (infra/keepalive_route.py: chalice
    deletes it on every update, so after every deploy), and REST and WebSocket stage throttling
    (infra/stage_settings.py);
 6. the frontend's `config.json` from the deployed URLs, the frontend files (never `tests/`,
    `demo/` only with --demo), a CloudFront invalidation when a file changed;
 7. a smoke test of the stage: health, a visitor token, a WebSocket ping, one message between
    two visitors and its `delivered`.
A second run changes nothing and creates no API: the state names the APIs chalice updates.

`destroy`: `chalice delete` with the restored state, the region's function roles, then the
buckets are emptied and the infra stack deleted; the tables, secrets and media bucket (RetainExceptOnCreate) stay.
Every step can be run again: a failed deploy is finished by the next `make deploy`
(docs/deploy.md, When a deploy fails).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import mimetypes
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.exceptions import BotoCoreError, ClientError

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from infra import gateway_responses, keepalive_route, roles, runtime, stage_settings, wire_config  # noqa: E402  (needs the repo root on sys.path)

APP_NAME = "webim"
STATE_PREFIX = "chalice/deployed/"
# Files the browser must see fresh after every deploy (the rest is invalidated in CloudFront).
NO_CACHE = frozenset({"config.json"})


class DeployError(Exception):
    """A step failed; the message says which and what to do."""


@dataclass
class Target:
    """One stage of one working copy."""

    stage: str
    project_dir: Path = REPO_ROOT
    region: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def stack_name(self) -> str:
        return f"{APP_NAME}-{self.stage}"

    @property
    def state_path(self) -> Path:
        return self.project_dir / ".chalice" / "deployed" / f"{self.stage}.json"

    @property
    def state_key(self) -> str:
        return f"{STATE_PREFIX}{self.stage}.json"

    def session(self) -> boto3.session.Session:
        session = boto3.session.Session(region_name=self.region)
        record_actions(session.events.register)
        return session


def log(step: str, text: str) -> None:
    print(f"[{step}] {text}", flush=True)


# --- rehearsal hooks: inert on AWS ----------------------------------------------------------

# WEBIM_REHEARSAL_FAULT=create|after-chalice makes a deploy fail there, honoured only with
# AWS_ENDPOINT_URL set (the rehearsal's moto server): never against AWS.
FAULT_VARIABLE = "WEBIM_REHEARSAL_FAULT"
# WEBIM_DEPLOY_ACTION_LOG=<file>: every AWS call this process (and its chalice child) makes is
# appended there, "<signing name> <operation> <HTTP method>" a line (tests/test_deploy_rehearsal.py
# holds infra/deployer-policy.json to them).
ACTION_LOG_VARIABLE = "WEBIM_DEPLOY_ACTION_LOG"


def rehearsal_fault(point: str) -> bool:
    return bool(os.environ.get("AWS_ENDPOINT_URL")) and os.environ.get(FAULT_VARIABLE) == point


def record_actions(register: Any) -> None:
    """A botocore `before-call` hook (given the session's `register`) writing each call to the action
    log (when one is asked for)."""
    path = os.environ.get(ACTION_LOG_VARIABLE)
    if not path:
        return

    def write(model: Any, **_: Any) -> None:
        with open(path, "a") as out:
            out.write(f"{model.service_model.signing_name} {model.name} {model.http.get('method', 'POST')}\n")

    register("before-call", write)


# --- 1. preflight ----------------------------------------------------------------------------


def check_credentials(session: boto3.session.Session) -> dict[str, str]:
    """Who deploys, and where: fails before anything is created."""
    if not session.region_name:
        raise DeployError("no AWS region: set AWS_DEFAULT_REGION, `aws configure`, or pass --region")
    try:
        identity = session.client("sts").get_caller_identity()
    except (ClientError, BotoCoreError) as error:
        raise DeployError(f"AWS credentials do not work ({error}); see docs/deploy.md, Prerequisites") from error
    return {"account": identity["Account"], "arn": identity["Arn"], "region": session.region_name}


def lambda_runtime(version_info: tuple[int, int]) -> str:
    """The runtime `chalice deploy` gives the functions from a deployer's Python of this version,
    clamped to what Lambda offers (chalice.config.Config.lambda_python_version)."""
    major, minor = version_info
    if (major, minor) < (3, 10):
        return "python3.10"
    return f"python{major}.{minor}" if (major, minor) <= (3, 14) else "python3.15"


def check_python(project_dir: Path, chosen: str | None = None) -> str:
    """chalice picks the runtime from the Python that runs it: chalice runs in the deploy venv
    (infra/runtime.py: Python 3.13, made on first use), never in the development .venv (3.11,
    whose runtime runs on Amazon Linux 2, retired)."""
    try:
        chosen = chosen or runtime.check_runtime(project_dir)[1]
    except runtime.RuntimeMissing as error:
        raise DeployError(str(error)) from None
    if chosen != runtime.RUNTIME:
        raise DeployError(f"chalice would deploy the {chosen} runtime; the project deploys {runtime.RUNTIME} "
                          f"(infra/runtime.py)")
    return chosen


# --- 2. infra stack --------------------------------------------------------------------------


def stack_parameters(given: Mapping[str, str], existing: Iterable[str]) -> list[dict[str, Any]]:
    """Given values; on an update, the previous value of every other parameter the stack has
    (UpdateStack would otherwise reset e.g. WafRateLimit to its default)."""
    params: list[dict[str, Any]] = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())]
    params += [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(existing) if k not in given]
    return params


def describe_stack(cfn: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return dict(stacks[0]) if stacks else None


def wait_api_throttle(stage: str) -> dict[str, str]:
    """The wait API's stage throttle (template parameters WaitApiRate / WaitApiBurst), from the
    same table as the REST and WebSocket stages' (infra/stage_settings.py; prod's derived from
    the scale model, infra/scale_model.py). The wait API is the stack's, so its throttle is a
    parameter of the stack rather than a call after `chalice deploy`."""
    limits = stage_settings.throttling_for(stage)
    return {"WaitApiRate": str(limits.wait_rate), "WaitApiBurst": str(limits.wait_burst)}


# Resources of fixed names (infra/template.yaml) that outlive a stack: `make destroy` keeps the
# tables and secrets (documented), and a stack created before RetainExceptOnCreate kept them
# after a failed create too. CreateStack fails on any of them ("already exists").
FIXED_TABLES = ("connections", "messages", "members")
FIXED_QUEUES = ("ack-timeout", "dead-letter")
FIXED_SECRETS = ("signing", "host-auth")
# Buckets have generated names, "<stack>-<logical id>-<suffix>": a left-over one blocks nothing
# but is one more bucket per failed attempt.
STACK_BUCKETS = ("mediabucket", "frontendbucket", "deploystatebucket")
# What a new account's first deploy meets, in one line each (CloudFormation's reason -> what to do).
FAILURE_HINTS = (
    ("must be verified", "CloudFront takes no new resources until AWS verifies the account: ask AWS Support "
                         "(Support Center, Account and billing) to verify the account for CloudFront, then run "
                         "`make deploy` again (PARAMS=WithCdn=false deploys without CloudFront meanwhile)"),
    ("not authorized", "the deployer lacks a permission: attach infra/deployer-policy.json (docs/deploy.md)"),
    ("AccessDenied", "the deployer lacks a permission: attach infra/deployer-policy.json (docs/deploy.md)"),
)
FAULT_RESOURCE = """Resources:
  RehearsalFault:  # WEBIM_REHEARSAL_FAULT=create: a second table of ConnectionsTable's name
    Type: AWS::DynamoDB::Table
    DependsOn: [ConnectionsTable, MessagesTable, MembersTable, MediaBucket, FrontendBucket, DeployStateBucket]
    Properties:
      TableName: !Sub "${AppName}-${Stage}-connections"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
"""


def stack_failure(cfn: Any, stack_name: str) -> str:
    """The first failure CloudFormation reported in the stack's events (the later ones are
    "cancelled" consequences), with what to do when it is one a new account meets."""
    try:
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    except ClientError:
        return ""
    for event in reversed(events):  # oldest first
        reason = str(event.get("ResourceStatusReason") or "")
        if not str(event.get("ResourceStatus", "")).endswith("_FAILED") or not reason or "cancelled" in reason:
            continue
        hint = next((h for marker, h in FAILURE_HINTS if marker.lower() in reason.lower()), "")
        text = f"{event.get('LogicalResourceId')} ({event.get('ResourceType')}): {reason}"
        return f"{text}; {hint}" if hint else text
    return ""


def _table_orphans(dynamodb: Any, prefix: str, removed: list[str], blocking: list[str]) -> None:
    for suffix in FIXED_TABLES:
        name = f"{prefix}-{suffix}"
        try:
            table = dynamodb.describe_table(TableName=name)["Table"]
        except dynamodb.exceptions.ResourceNotFoundException:
            continue
        if dynamodb.scan(TableName=name, Limit=1, Select="COUNT")["Count"]:
            blocking.append(f"table {name} (holds items)")
            continue
        if table.get("DeletionProtectionEnabled"):
            dynamodb.update_table(TableName=name, DeletionProtectionEnabled=False)
        dynamodb.delete_table(TableName=name)
        dynamodb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 90})
        removed.append(f"table {name} (empty)")


def _queue_and_secret_orphans(session: boto3.session.Session, prefix: str, with_secrets: bool,
                              removed: list[str], blocking: list[str]) -> None:
    sqs = session.client("sqs")
    for suffix in FIXED_QUEUES:
        try:
            sqs.get_queue_url(QueueName=f"{prefix}-{suffix}")
        except ClientError:
            continue
        blocking.append(f"queue {prefix}-{suffix}")
    if not with_secrets:
        return
    secrets = session.client("secretsmanager")
    for suffix in FIXED_SECRETS:
        name = f"{prefix}-{suffix}"
        try:
            described = secrets.describe_secret(SecretId=name)
        except secrets.exceptions.ResourceNotFoundException:
            continue
        if described.get("DeletedDate"):
            secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            removed.append(f"secret {name} (was scheduled for deletion)")
        else:
            blocking.append(f"secret {name}")


def _bucket_orphans(s3: Any, prefix: str, region: str | None, removed: list[str]) -> list[str]:
    kept = []
    for bucket in s3.list_buckets().get("Buckets", []):
        name = str(bucket["Name"])
        if not any(name.startswith(f"{prefix}-{logical}-") for logical in STACK_BUCKETS):
            continue
        if (s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1") != region:
            continue
        page = s3.list_object_versions(Bucket=name, MaxKeys=1)
        if page.get("Versions") or page.get("DeleteMarkers"):
            kept.append(name)
        else:
            s3.delete_bucket(Bucket=name)
            removed.append(f"bucket {name} (empty)")
    return kept


def clear_orphans(session: boto3.session.Session, target: Target, with_secrets: bool = True) -> list[str]:
    """Before CreateStack: resources of the stage's fixed names left by an earlier stack or a
    failed attempt. What holds nothing is removed (an empty table, even protected: nothing to
    protect; a secret already scheduled for deletion, which would hold its name for 7-30 days;
    an empty bucket of this stack in this region); what holds data is named in one DeployError.
    Returns what was removed."""
    prefix = target.stack_name
    removed: list[str] = []
    blocking: list[str] = []
    _table_orphans(session.client("dynamodb"), prefix, removed, blocking)
    _queue_and_secret_orphans(session, prefix, with_secrets, removed, blocking)
    kept_buckets = _bucket_orphans(session.client("s3"), prefix, session.region_name, removed)
    for item in removed:
        log("orphans", f"removed {item}, left by an earlier attempt")
    if kept_buckets:  # no name clash: CreateStack makes new buckets; these hold objects
        log("orphans", f"kept bucket(s) of an earlier {prefix} holding objects: {', '.join(kept_buckets)} "
                       "(delete them when their objects may go)")
    if blocking:
        raise DeployError(
            f"stack {prefix} does not exist, yet resources of its fixed names do, and CreateStack would fail "
            f"on them: {', '.join(blocking)}. They hold data from an earlier {prefix} (`make destroy` keeps "
            f"tables and secrets): delete them if it may go, or import them into the stack "
            f"(docs/deploy.md, Leftovers of an earlier stack)")
    return removed


def _wait_stack(cfn: Any, name: str, waiter: str) -> None:
    try:
        # CloudFront makes a first create take minutes: up to 40 min (480 x 5 s)
        cfn.get_waiter(waiter).wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 480})
    except BotoCoreError as error:
        reason = stack_failure(cfn, name)
        if waiter == "stack_create_complete":
            raise DeployError(
                f"stack {name} failed to create: {reason or error}. Nothing of it is kept (RetainExceptOnCreate); "
                f"once that is fixed, run `make deploy` again: it deletes the failed stack and creates it anew"
            ) from None
        raise DeployError(f"stack {name} did not finish ({reason or error}); CloudFormation rolls an update "
                          f"back as a whole: the stage keeps its previous stack") from None


def create_infra_stack(cfn: Any, target: Target, template_body: str, given: Mapping[str, str]) -> None:
    """CreateStack with the tables' deletion protection off, then (created) an update that
    switches it on: protection or Retain on a create that rolls back would keep the tables and
    block the next CreateStack; RetainExceptOnCreate (the template) and this keep nothing of a
    failed create."""
    name = target.stack_name
    protect = given.get("DeletionProtection", "true")
    if rehearsal_fault("create"):
        template_body = template_body.replace("\nResources:\n", "\n" + FAULT_RESOURCE, 1)
    log("infra", f"creating stack {name}")
    try:
        cfn.create_stack(StackName=name, TemplateBody=template_body,
                         Parameters=stack_parameters({**given, "DeletionProtection": "false"}, ()))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "AlreadyExistsException":
            raise DeployError(f"stack {name} is being created by another deploy: wait for it to end") from None
        raise
    _wait_stack(cfn, name, "stack_create_complete")
    if protect == "true":
        log("infra", f"stack {name} created; switching the tables' deletion protection on")
        cfn.update_stack(StackName=name, TemplateBody=template_body,
                         Parameters=stack_parameters({**given, "DeletionProtection": "true"}, ()))
        _wait_stack(cfn, name, "stack_update_complete")


def deploy_infra_stack(cfn: Any, target: Target, template_body: str,
                       session: boto3.session.Session | None = None) -> dict[str, str]:
    """Create or update the stack and wait; returns its outputs (OutputKey -> OutputValue).
    A stack whose create failed (ROLLBACK_COMPLETE: it holds nothing, and cannot be updated) is
    deleted and created anew; before a create, leftovers of its fixed names are cleared or named
    (`clear_orphans`, with `session`)."""
    name = target.stack_name
    # DeletionProtection "true" unless given each time: a create passes "false" and then "true"
    # (create_infra_stack), so a previous value could be the create's "false"
    given = {"AppName": APP_NAME, "Stage": target.stage, "DeletionProtection": "true",
             **wait_api_throttle(target.stage), **target.parameters}
    stack = describe_stack(cfn, name)
    status = str((stack or {}).get("StackStatus", ""))
    if status.endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {name} is {status}: another deploy (or a CloudFormation operation) is running "
                          f"on it; wait for it to end, then run `make deploy` again")
    if status == "ROLLBACK_COMPLETE":
        log("infra", f"stack {name} failed to create earlier ({stack_failure(cfn, name) or 'see its events'}); "
                     f"deleting it to create it anew")
        cfn.delete_stack(StackName=name)
        cfn.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 480})
        stack = None
    if stack is None:
        if session is not None:
            clear_orphans(session, target, with_secrets=given.get("WithSecrets", "true") == "true")
        create_infra_stack(cfn, target, template_body, given)
    else:
        existing = [p["ParameterKey"] for p in stack.get("Parameters", [])]
        try:
            cfn.update_stack(StackName=name, TemplateBody=template_body,
                             Parameters=stack_parameters(given, existing))
        except ClientError as error:
            if "No updates are to be performed" not in str(error):
                raise
            log("infra", f"stack {name} is up to date")
        else:
            log("infra", f"updating stack {name}")
            _wait_stack(cfn, name, "stack_update_complete")
    stack = describe_stack(cfn, name) or {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


# --- 3. wiring -------------------------------------------------------------------------------


def wire_outputs(target: Target, outputs: Mapping[str, str]) -> dict[str, str]:
    """The outputs as the stage's environment variables in .chalice/config.json (changed only if
    a value differs, so a second run leaves the file as it is)."""
    env = wire_config.outputs_to_env({"OutputKey": k, "OutputValue": v} for k, v in outputs.items())
    path = target.project_dir / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    merged = wire_config.merge_env(config, target.stage, env)
    if merged != config:
        path.write_text(json.dumps(merged, indent=2) + "\n")
        log("wire", f"{path.relative_to(target.project_dir)}: stage {target.stage} updated from the stack outputs")
    return env


# --- 4. deploy state and chalice -------------------------------------------------------------


def state_region(path: Path) -> str | None:
    """The region a deploy state's functions are in (their ARNs), None when it names none."""
    if not path.exists():
        return None
    for resource in json.loads(path.read_text()).get("resources", []):
        if resource.get("resource_type") == "lambda_function" and str(resource.get("lambda_arn", "")).count(":") >= 6:
            return str(resource["lambda_arn"]).split(":")[3]
    return None


def set_state_aside(target: Target, region: str) -> Path:
    """The local state of another region, moved to `<stage>.<region>.json` (chalice reads only
    `<stage>.json`; that region's own bucket holds its state too)."""
    aside = target.state_path.with_name(f"{target.stage}.{region}.json")
    target.state_path.replace(aside)
    return aside


def restore_state(s3: Any, bucket: str, target: Target, region: str | None = None) -> str:
    """The bucket's state replaces the local file (the bucket is the shared truth). With none in
    the bucket a local file is kept: that is how a stage deployed before the bucket existed
    moves its state in (saved after this deploy); but not one of another `region` (the same
    stage deployed there from this clone): chalice would update, or delete, that region's APIs."""
    try:
        body = s3.get_object(Bucket=bucket, Key=target.state_key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        other = state_region(target.state_path)
        if region and other and other != region:
            return f"none (the local state is of {other}: set aside as {set_state_aside(target, other).name})"
        return "local" if target.state_path.exists() else "none"
    target.state_path.parent.mkdir(parents=True, exist_ok=True)
    target.state_path.write_bytes(body)
    return "bucket"


def save_state(s3: Any, bucket: str, target: Target) -> bool:
    """Whatever chalice left in .chalice/deployed/<stage>.json, into the bucket."""
    if not target.state_path.exists():
        return False
    s3.put_object(Bucket=bucket, Key=target.state_key, Body=target.state_path.read_bytes(),
                  ContentType="application/json", ServerSideEncryption="AES256")
    return True


def merge_partial_state(previous: Mapping[str, Any] | None, created: list[dict[str, Any]]) -> dict[str, Any]:
    """State after a failed `chalice deploy`: what it created or updated before failing, plus
    the previous state's other resources. chalice itself writes nothing on failure, and the next
    deploy would then create a second REST or WebSocket API beside the one just made."""
    names = {resource["name"] for resource in created}
    kept = [r for r in (previous or {}).get("resources", []) if r["name"] not in names]
    return {"resources": kept + created, "schema_version": "2.0", "backend": "api"}


def run_chalice(command: str, target: Target) -> None:
    """`chalice deploy|delete` in a child process (chalice imports app.py with the stage's
    environment variables set, once per process), through `_chalice_child` below."""
    env = dict(os.environ)
    if target.region:
        env["AWS_DEFAULT_REGION"] = target.region
    python = runtime.ensure_deploy_venv(target.project_dir)  # chalice's runtime is its interpreter's
    result = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "_chalice", command, "--stage", target.stage,
         "--project-dir", str(target.project_dir)],
        cwd=target.project_dir, env=env)
    if result.returncode != 0:
        raise DeployError(f"chalice {command} failed (exit {result.returncode}); the state it left is saved")


def _chalice_child(command: str, stage: str, project_dir: Path) -> int:
    from chalice.cli import factory as chalice_factory
    from chalice.deploy.deployer import ChaliceDeploymentError
    from chalice.utils import UI

    factory = chalice_factory.CLIFactory(project_dir=str(project_dir))
    config = factory.create_config_obj(chalice_stage_name=stage)
    session = factory.create_botocore_session()
    record_actions(session.register)
    if command == "delete":
        factory.create_deletion_deployer(session=session, ui=UI()).deploy(config, chalice_stage_name=stage)
        return 0
    deployer = factory.create_default_deployer(session=session, config=config, ui=UI())
    try:
        values = deployer.deploy(config, chalice_stage_name=stage)
    except ChaliceDeploymentError as error:
        # The executor's values are what this run made (a private attribute: chalice offers no
        # other way to learn it).
        created = list(getattr(getattr(deployer, "_executor", None), "resource_values", []))
        path = project_dir / ".chalice" / "deployed" / f"{stage}.json"
        previous = json.loads(path.read_text()) if path.exists() else None
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(merge_partial_state(previous, created), indent=2) + "\n")
        print(error, file=sys.stderr)
        return 2
    factory.create_deployment_reporter(ui=UI()).display_report(values)
    return 0


def chalice_deploy(s3: Any, state_bucket: str, target: Target) -> None:
    """`chalice deploy`, its state saved to the bucket whatever the outcome."""
    try:
        run_chalice("deploy", target)
    finally:
        if save_state(s3, state_bucket, target):
            log("state", f"saved to s3://{state_bucket}/{target.state_key}")


def link_api_ids(cfn: Any, target: Target) -> bool:
    """The infra stack's WebSocket alarms and dashboard graph (WebSocketApiId) and its WAF
    association (RestApiId) name the APIs chalice made, known only after the first `chalice
    deploy`: pass them to the stack then (one more stack update, on a first deploy only; later
    runs keep them as previous values). A value given with PARAMS wins. Returns whether the
    stack was updated."""
    ids = stage_settings.deployed_api_ids(target.project_dir / ".chalice", target.stage)
    wanted = {key: ids[kind] for key, kind in (("WebSocketApiId", "websocket_api"), ("RestApiId", "rest_api"))
              if ids.get(kind) and key not in target.parameters}
    stack = describe_stack(cfn, target.stack_name) or {}
    current = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    missing = {key: value for key, value in wanted.items() if key in current and current[key] != value}
    if not missing:
        return False
    log("infra", f"linking the stack to the deployed APIs: {', '.join(f'{k}={v}' for k, v in sorted(missing.items()))}")
    # every other parameter as it is now, given explicitly (moto's UpdateStack cannot take a
    # UsePreviousValue of a parameter left at its default; AWS treats both the same)
    linked = replace(target, parameters={**current, **target.parameters, **missing})
    deploy_infra_stack(cfn, linked, (target.project_dir / "infra" / "template.yaml").read_text())
    return True


def deployed_websocket_api(target: Target) -> str | None:
    return stage_settings.deployed_api_ids(target.project_dir / ".chalice", target.stage).get("websocket_api")


def scope_policies(target: Target, websocket_api: str, who: Mapping[str, str]) -> list[Path]:
    """The functions' ManageConnections permission names this WebSocket API (the committed policy
    files hold a placeholder that matches none); returns the policy files changed."""
    chalice_dir = target.project_dir / ".chalice"
    changed = stage_settings.write_scoped_policies(
        chalice_dir, target.stage, websocket_api, stage_settings.api_gateway_stage(chalice_dir, target.stage),
        who["region"], who["account"])
    log("scope", f"callback permission scoped to WebSocket API {websocket_api}: "
                 f"{', '.join(p.name for p in changed) or 'no change'}")
    return changed


def deployed_resources(target: Target) -> list[dict[str, Any]]:
    if not target.state_path.exists():
        return []
    return list(json.loads(target.state_path.read_text()).get("resources", []))


def deployed_urls(target: Target) -> dict[str, str]:
    """{"apiUrl": REST URL, "websocketUrl": WebSocket URL} from the deploy state."""
    urls: dict[str, str] = {}
    for resource in deployed_resources(target):
        if resource.get("resource_type") == "rest_api":
            urls["apiUrl"] = resource["rest_api_url"]
        elif resource.get("resource_type") == "websocket_api":
            urls["websocketUrl"] = resource["websocket_api_url"]
    if set(urls) != {"apiUrl", "websocketUrl"}:
        raise DeployError(f"{target.state_path} names no REST and WebSocket API")
    return urls


# --- 5. what chalice cannot configure --------------------------------------------------------


def enable_partial_batch_responses(lambda_client: Any, target: Target) -> list[str]:
    """ReportBatchItemFailures on every SQS event source of the stage: the handler's
    `batchItemFailures` then redeliver only the failed records. chalice has no option for it and
    leaves the setting alone on later deploys; set only where missing (a second run changes
    nothing). Returns the mappings changed."""
    changed = []
    for resource in deployed_resources(target):
        if resource.get("resource_type") != "sqs_event":
            continue
        uuid = resource["event_uuid"]
        mapping = lambda_client.get_event_source_mapping(UUID=uuid)
        if "ReportBatchItemFailures" not in mapping.get("FunctionResponseTypes", []):
            lambda_client.update_event_source_mapping(UUID=uuid, FunctionResponseTypes=["ReportBatchItemFailures"])
            changed.append(uuid)
    return changed


def throttle_stages(apigateway: Any, apigatewayv2: Any, target: Target) -> stage_settings.Throttle:
    """The stage's throttling on both deployed API stages (chalice sets none); the same values
    again change nothing."""
    chalice_dir = target.project_dir / ".chalice"
    ids = stage_settings.deployed_api_ids(chalice_dir, target.stage)
    limits = stage_settings.throttling_for(target.stage)
    stage_settings.throttle(apigateway, apigatewayv2, ids.get("rest_api"), ids.get("websocket_api"),
                            stage_settings.api_gateway_stage(chalice_dir, target.stage), limits)
    return limits


def install_gateway_responses(apigateway: Any, target: Target) -> str:
    chalice_dir = target.project_dir / ".chalice"
    api_id = gateway_responses.rest_api_id(chalice_dir, target.stage)
    gateway_responses.install(apigateway, api_id, gateway_responses.api_gateway_stage(chalice_dir, target.stage))
    return api_id


def install_keepalive_route(apigatewayv2: Any, target: Target) -> str:
    """The `keepalive` route of infra/keepalive_route.json and a deployment of the stage (chalice
    deletes every route it did not make on each update: this runs after every `chalice deploy`)."""
    api_id = deployed_websocket_api(target)
    if not api_id:
        raise DeployError(f"{target.state_path} names no WebSocket API")
    keepalive_route.install(apigatewayv2, api_id,
                            stage_settings.api_gateway_stage(target.project_dir / ".chalice", target.stage))
    return api_id


# --- the stage's deploy lock ------------------------------------------------------------------

LOCK_PREFIX = "chalice/lock/"
# Longer than any deploy step between two refreshes (a CloudFront create: up to 40 min); a lock
# older than this is a deploy that died, taken over by the next.
LOCK_TTL_SECONDS = 3600


@dataclass
class DeployLock:
    """One deploy or destroy of a stage at a time: an object in the stage's state bucket written
    only if absent (S3 conditional write, If-None-Match), holding who, since when and until when;
    refreshed between steps, deleted on exit, taken over (If-Match on its ETag) once expired.
    A first create has no bucket yet: CreateStack itself is the lock then (a second one fails
    AlreadyExists, an in-progress stack is refused)."""

    s3: Any
    bucket: str
    stage: str
    owner: str
    token: str = field(default_factory=lambda: os.urandom(8).hex())
    etag: str = ""

    @property
    def key(self) -> str:
        return f"{LOCK_PREFIX}{self.stage}.json"

    def _body(self, now: float) -> bytes:
        return json.dumps({"owner": self.owner, "token": self.token, "since": int(now),
                           "expires": int(now + LOCK_TTL_SECONDS)}).encode()

    def _put(self, now: float, **condition: str) -> None:
        answer = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(now),
                                    ContentType="application/json", **condition)
        self.etag = str(answer["ETag"])

    def acquire(self, now: float | None = None) -> DeployLock:
        now = time.time() if now is None else now
        try:
            self._put(now, IfNoneMatch="*")
            return self
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                raise
        held = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        holder = json.loads(held["Body"].read())
        if holder.get("expires", 0) > now:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
            raise DeployError(
                f"stage {self.stage} is being deployed by {holder.get('owner')} since {since} (lock "
                f"s3://{self.bucket}/{self.key}, expires in {int(holder['expires'] - now)} s): wait for it to end; "
                f"if that deploy died, the next `make deploy` after the expiry takes the lock over")
        try:  # expired: a deploy that died; only one of several takers wins
            self._put(now, IfMatch=str(held["ETag"]))
        except ClientError as error:
            raise DeployError(f"stage {self.stage}: another deploy took over the expired lock first ({error})") \
                from None
        log("lock", f"took over the expired lock of {holder.get('owner')}")
        return self

    def refresh(self, now: float | None = None) -> None:
        """A longer expiry, while the lock is still ours (If-Match on our ETag)."""
        self._put(time.time() if now is None else now, IfMatch=self.etag)

    def release(self) -> None:
        try:
            held = json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except ClientError:
            return  # gone (destroy emptied the bucket)
        if held.get("token") == self.token:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)


def lock_owner(who: Mapping[str, str]) -> str:
    import socket

    return f"{who.get('arn', '?')} on {socket.gethostname()} (pid {os.getpid()})"


# --- account checks ----------------------------------------------------------------------------

# Lambda keeps 100 concurrent executions unreserved: reserving N needs an account limit of N + 100.
UNRESERVED_MINIMUM = 100


def reserved_concurrency(project_dir: Path, stage: str) -> int:
    """What the stage's functions reserve together (.chalice/config.json, lambda_functions'
    reserved_concurrency)."""
    config = json.loads((project_dir / ".chalice" / "config.json").read_text())
    total = 0
    for scope in (config, config.get("stages", {}).get(stage, {})):
        for settings in scope.get("lambda_functions", {}).values():
            total += int(settings.get("reserved_concurrency") or 0)
    return total


def check_lambda_quota(lambda_client: Any, reserved: int, region: str) -> int:
    """The account's concurrency limit (GetAccountSettings) against what the stage reserves: a
    new account has 10, and chalice's PutFunctionConcurrency would fail half-way. Returns the limit."""
    limit = int(lambda_client.get_account_settings()["AccountLimit"]["ConcurrentExecutions"])
    needed = reserved + UNRESERVED_MINIMUM
    if limit < needed:
        raise DeployError(
            f"this account's Lambda concurrency limit in {region} is {limit}; the stage reserves {reserved} and "
            f"Lambda keeps {UNRESERVED_MINIMUM} unreserved: request 'Concurrent executions' (L-B99A9384) of at "
            f"least {needed} in Service Quotas ({region}), or lower reserved_concurrency in .chalice/config.json")
    return limit


# --- roles' permissions boundary ------------------------------------------------------------------


def stack_resource_id(cfn: Any, stack_name: str, logical_id: str) -> str | None:
    """A resource's physical id (ListStackResources: moto's DescribeStackResource fails on a
    stack with an AWS::NoValue in it)."""
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        for resource in page["StackResourceSummaries"]:
            if resource["LogicalResourceId"] == logical_id:
                return str(resource.get("PhysicalResourceId") or "") or None
    return None


def roles_boundary(cfn: Any, target: Target) -> str:
    """The ARN of the stack's RolesBoundary, every function role's permissions boundary."""
    boundary = stack_resource_id(cfn, target.stack_name, "RolesBoundary")
    if not boundary:
        raise DeployError(f"stack {target.stack_name} has no RolesBoundary: run `make deploy` again "
                          f"(the stack update makes it)")
    return boundary


def put_function_roles(iam: Any, target: Target, who: Mapping[str, str], boundary: str) -> dict[str | None, str]:
    """The stage's function roles in this region (infra/roles.py: `webim-<stage>-<region>-...`,
    the policy files as they are now, the boundary), and their ARNs into .chalice/config.json
    (`manage_iam_role: false`, `iam_role_arn`), written only if a value differs. chalice names
    its own roles account-wide: the same stage in two regions would share them. Returns
    function (None: the stage's default) -> role ARN."""
    chalice_dir = target.project_dir / ".chalice"
    arns: dict[str | None, str] = {}
    for role in roles.stage_roles(chalice_dir, target.stage, who["region"]):
        arns[role.function], changed = roles.ensure_role(iam, role, boundary)
        log("roles", f"{role.name} ({role.policy_file.name}): {', '.join(changed) or 'as it is'}")
    path = chalice_dir / "config.json"
    config = json.loads(path.read_text())
    merged = roles.merge_role_arns(config, target.stage, arns)
    if merged != config:
        path.write_text(json.dumps(merged, indent=2) + "\n")
        log("roles", f".chalice/config.json: stage {target.stage}'s functions on these roles")
    return arns


# --- 6. frontend -----------------------------------------------------------------------------


def frontend_files(frontend_dir: Path, demo: bool) -> dict[str, Path]:
    """Object key -> file: everything but the tests, the local config.json, and demo/ unless asked."""
    files = {}
    for path in sorted(frontend_dir.rglob("*")):
        key = path.relative_to(frontend_dir).as_posix()
        top = key.split("/", 1)[0]
        if not path.is_file() or top == "tests" or key == "config.json" or (top == "demo" and not demo):
            continue
        if "node_modules" in key.split("/") or path.name.startswith("."):
            continue
        files[key] = path
    return files


def content_type(key: str) -> str:
    if key.endswith((".js", ".mjs")):
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") or guessed == "application/json" else guessed


def _existing_objects(s3: Any, bucket: str) -> dict[str, str]:
    etags = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            etags[item["Key"]] = item["ETag"].strip('"')
    return etags


def frontend_config(s3: Any, bucket: str, urls: Mapping[str, str]) -> bytes:
    """The bucket's config.json with the deployed URLs; other keys an operator added there
    (e.g. hostTokenUrl) are kept."""
    try:
        current = json.loads(s3.get_object(Bucket=bucket, Key="config.json")["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        current = {}
    if not isinstance(current, dict):
        current = {}
    current.update(urls)
    return (json.dumps(current, indent=2, sort_keys=True) + "\n").encode()


def upload_frontend(s3: Any, bucket: str, frontend_dir: Path, config_body: bytes, demo: bool) -> list[str]:
    """Like `aws s3 sync --delete`, by content (MD5 = the ETag of a single-part upload): uploads
    what differs, deletes what is gone. Returns the keys changed."""
    existing = _existing_objects(s3, bucket)
    wanted: dict[str, bytes] = {key: path.read_bytes() for key, path in frontend_files(frontend_dir, demo).items()}
    wanted["config.json"] = config_body
    changed = []
    for key, body in sorted(wanted.items()):
        if existing.get(key) == hashlib.md5(body, usedforsecurity=False).hexdigest():
            continue
        extra = {"CacheControl": "no-cache"} if key in NO_CACHE else {}
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type(key), **extra)
        changed.append(key)
    gone = sorted(set(existing) - set(wanted))
    for start in range(0, len(gone), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in gone[start:start + 1000]]})
    return changed + gone


def distribution_id(cfn: Any, stack_name: str) -> str | None:
    try:
        resource = cfn.describe_stack_resource(StackName=stack_name, LogicalResourceId="FrontendDistribution")
    except ClientError:
        return None
    return str(resource["StackResourceDetail"]["PhysicalResourceId"]) or None


def invalidate(cloudfront: Any, dist_id: str) -> str:
    batch = {"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": f"deploy-{time.time_ns()}"}
    return str(cloudfront.create_invalidation(DistributionId=dist_id, InvalidationBatch=batch)["Invalidation"]["Id"])


# --- 7. smoke test ---------------------------------------------------------------------------


# A just-created API's hostname takes a while to resolve everywhere, and its first requests may
# meet a 5xx while the stage settles: the smoke test's first call waits out that much, no more.
SMOKE_WAITS = (2.0, 4.0, 8.0, 15.0, 30.0)


async def until_reachable(call: Any, waits: Iterable[float] = SMOKE_WAITS,
                          sleep: Any = asyncio.sleep) -> Any:
    """`await call()` until it neither fails to connect nor answers 5xx, waiting `waits` in
    between (bounded: about a minute by default); then its answer, or DeployError in one line."""
    import httpx

    problem = ""
    for wait in [*waits, None]:
        try:
            answer = await call()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout) as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if answer.status_code < 500:
                return answer
            problem = f"answered {answer.status_code}"
        if wait is None:
            break
        await sleep(wait)
    raise DeployError(f"smoke: the new API was not reachable after {sum(waits):.0f} s ({problem})")


async def _open_when_resolvable(url: str, timeout: float, waits: Iterable[float] = SMOKE_WAITS) -> Any:
    """A started SDK client on `url` (its start pings: the identity); a fresh client after each
    wait while the new WebSocket API's hostname does not resolve or refuses (OSError), bounded
    like `until_reachable`."""
    from webim_client import Client, WebSocketTransport

    for wait in [*waits, None]:
        client = Client(WebSocketTransport(url))
        try:
            await asyncio.wait_for(client.start(pull=False), timeout)
            return client
        except OSError as error:
            await client.close()
            if wait is None:
                raise DeployError(f"smoke: the WebSocket API was not reachable ({type(error).__name__}: {error})") \
                    from None
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def smoke_test(api_url: str, websocket_url: str, timeout: float = 30.0) -> dict[str, Any]:
    """health, two visitor tokens, a WebSocket ping each, one message and its `delivered`.
    Leaves two visitors and one conversation in the stage (protocol.md: visitors expire)."""
    import httpx

    base = api_url.rstrip("/") + "/"
    async with httpx.AsyncClient(timeout=timeout) as http:
        health = await until_reachable(lambda: http.get(base + "health"))
        if health.status_code != 200:
            raise DeployError(f"smoke: GET /health answered {health.status_code}: {health.text[:200]}")
        visitors = []
        for _ in range(2):
            minted = await http.post(base + "identity/visitor")
            if minted.status_code not in (200, 201):
                raise DeployError(f"smoke: POST /identity/visitor answered {minted.status_code}: {minted.text[:200]}")
            visitors.append(minted.json())
    clients: list[Any] = []
    try:
        for visitor in visitors:  # the WebSocket API has a hostname of its own, as new as the REST one
            url = f"{websocket_url}?token={quote(visitor['token'], safe='')}"
            clients.append(await _open_when_resolvable(url, timeout))
        sender, receiver = clients
        # the receiver, a visitor, writes first: a visitor's `delivered` is told only where it
        # wrote (the privacy rule, docs/presence.md)
        hello = await receiver.send(text="make deploy smoke test: hello", to=visitors[0]["identity"])
        await asyncio.wait_for(hello.accepted, timeout)
        sent = await sender.send(text="make deploy smoke test", to=visitors[1]["identity"])
        await asyncio.wait_for(sent.delivered, timeout)
        received = await asyncio.wait_for(receiver.inbox.get(), timeout)
    finally:
        for client in clients:
            await client.close()
    return {"conversation_id": sent.conversation_id, "seq": sent.seq, "received": received.get("text")}


# --- the commands ----------------------------------------------------------------------------


def deploy(target: Target, demo: bool = False, smoke: bool = True) -> dict[str, str]:
    session = target.session()
    who = check_credentials(session)
    log("preflight", f"account {who['account']} ({who['arn']}), region {who['region']}")
    log("preflight", f"Lambda runtime {check_python(target.project_dir)}")

    cfn, s3 = session.client("cloudformation"), session.client("s3")
    reserved = reserved_concurrency(target.project_dir, target.stage)
    limit = check_lambda_quota(session.client("lambda"), reserved, who["region"])
    log("preflight", f"Lambda concurrency limit {limit} (the stage reserves {reserved})")
    lock = lock_existing_stage(cfn, s3, target, who)
    try:
        outputs = deploy_infra_stack(cfn, target, (target.project_dir / "infra" / "template.yaml").read_text(),
                                     session)
        if lock is None:  # a first create: the bucket exists only now
            lock = DeployLock(s3, outputs["DeployStateBucket"], target.stage, lock_owner(who)).acquire()
        else:
            lock.refresh()
        return _deploy_app(session, target, who, outputs, lock, demo, smoke)
    finally:
        if lock is not None:
            lock.release()


def lock_existing_stage(cfn: Any, s3: Any, target: Target, who: Mapping[str, str]) -> DeployLock | None:
    """The stage's lock, when its stack exists with a state bucket (else None: see DeployLock)."""
    stack = describe_stack(cfn, target.stack_name) or {}
    if str(stack.get("StackStatus", "")).endswith("_IN_PROGRESS"):
        return None  # deploy_infra_stack refuses it
    bucket = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}.get("DeployStateBucket")
    if not bucket:
        return None
    lock = DeployLock(s3, bucket, target.stage, lock_owner(who)).acquire()
    log("lock", f"stage {target.stage} locked (s3://{bucket}/{lock.key})")
    return lock


def _deploy_app(session: boto3.session.Session, target: Target, who: Mapping[str, str], outputs: Mapping[str, str],
                lock: DeployLock, demo: bool, smoke: bool) -> dict[str, str]:
    """Steps 3-7, the lock held."""
    cfn, s3 = session.client("cloudformation"), session.client("s3")
    wire_outputs(target, outputs)
    state_bucket = outputs["DeployStateBucket"]
    log("state", f"deploy state: {restore_state(s3, state_bucket, target, who['region'])} "
                 f"(s3://{state_bucket}/{target.state_key})")
    websocket_api = deployed_websocket_api(target)
    if websocket_api:
        scope_policies(target, websocket_api, who)
    iam, boundary = session.client("iam"), roles_boundary(cfn, target)
    put_function_roles(iam, target, who, boundary)
    chalice_deploy(s3, state_bucket, target)
    if not websocket_api:
        # A first deploy: the API exists only now; the roles' policies are scoped to it in place
        # (the roles are ours: no second `chalice deploy`).
        websocket_api = deployed_websocket_api(target)
        if websocket_api and scope_policies(target, websocket_api, who):
            put_function_roles(iam, target, who, boundary)
    lock.refresh()
    if rehearsal_fault("after-chalice"):
        raise DeployError("rehearsal: a failure injected after chalice deploy (WEBIM_REHEARSAL_FAULT=after-chalice)")

    link_api_ids(cfn, target)
    changed = enable_partial_batch_responses(session.client("lambda"), target)
    log("sqs", f"partial batch responses: {len(changed)} event source(s) changed")
    api_id = install_gateway_responses(session.client("apigateway"), target)
    log("gateway", f"error-shape gateway responses installed on REST API {api_id}")
    websocket_api = install_keepalive_route(session.client("apigatewayv2"), target)
    log("keepalive", f"keepalive route (a mock: no Lambda) installed on WebSocket API {websocket_api}")
    # After the gateway responses' deployment: AWS keeps a stage's settings on a new deployment,
    # moto (the rehearsal) makes the stage anew; last is right for both.
    limits = throttle_stages(session.client("apigateway"), session.client("apigatewayv2"), target)
    log("throttle", f"stage throttling: REST {limits.rest_rate}/s (burst {limits.rest_burst}), "
                    f"WebSocket {limits.websocket_rate}/s (burst {limits.websocket_burst})")

    urls = deployed_urls(target)
    frontend_bucket = outputs["FrontendBucket"]
    config_body = frontend_config(s3, frontend_bucket, urls)
    uploaded = upload_frontend(s3, frontend_bucket, target.project_dir / "frontend", config_body, demo)
    log("frontend", f"{len(uploaded)} object(s) changed in s3://{frontend_bucket}")
    # No FrontendUrl: a stack without CloudFront (WithCdn=false)
    dist = distribution_id(cfn, target.stack_name) if "FrontendUrl" in outputs else None
    if uploaded and dist:
        log("frontend", f"CloudFront invalidation {invalidate(session.client('cloudfront'), dist)} for /*")

    if smoke:
        result = asyncio.run(smoke_test(urls["apiUrl"], urls["websocketUrl"]))
        log("smoke", f"health, tokens, ping, message and delivered: ok ({result['conversation_id']})")
    else:
        log("smoke", "skipped (--skip-smoke)")
    summary = {**urls, "frontendUrl": outputs.get("FrontendUrl", "")}
    for key, value in summary.items():
        log("done", f"{key}: {value}")
    return summary


def _empty_bucket(s3: Any, bucket: str) -> None:
    """Every object version and delete marker (the state bucket is versioned)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if items:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": items})


def destroy(target: Target) -> None:
    session = target.session()
    who = check_credentials(session)
    log("preflight", f"account {who['account']}, region {who['region']}")
    cfn, s3 = session.client("cloudformation"), session.client("s3")
    lock = lock_existing_stage(cfn, s3, target, who)
    try:
        _destroy(cfn, s3, target, session.client("iam"), who["region"])
    finally:
        if lock is not None:
            lock.release()  # nothing left to release once the bucket is emptied


def _destroy(cfn: Any, s3: Any, target: Target, iam: Any, region: str) -> None:
    stack = describe_stack(cfn, target.stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}
    state_bucket = outputs.get("DeployStateBucket")
    if state_bucket:
        log("state", f"deploy state: {restore_state(s3, state_bucket, target, region)}")
    elif (other := state_region(target.state_path)) not in (None, region):
        set_state_aside(target, str(other))  # another region's: chalice would delete that region's app
    if deployed_resources(target):
        try:
            run_chalice("delete", target)
        finally:
            if state_bucket:
                save_state(s3, state_bucket, target)
        log("app", "chalice app deleted")
    else:
        log("app", "no chalice app recorded for this stage")
    # after the functions that ran with them; the names are this region's only
    deleted = [role.name for role in roles.stage_roles(target.project_dir / ".chalice", target.stage, region)
               if roles.delete_role(iam, role.name)]
    log("roles", f"deleted {', '.join(deleted) or 'no role'}")
    if stack is None:
        log("infra", f"no stack {target.stack_name}")
        return
    # The app is gone, so its state is no longer needed; CloudFormation deletes only empty buckets.
    for bucket in (outputs.get("FrontendBucket"), state_bucket):
        if bucket:
            _empty_bucket(s3, bucket)
    log("infra", f"deleting stack {target.stack_name} (tables and secrets with a Retain policy stay)")
    cfn.delete_stack(StackName=target.stack_name)
    cfn.get_waiter("stack_delete_complete").wait(StackName=target.stack_name,
                                                 WaiterConfig={"Delay": 5, "MaxAttempts": 480})
    log("done", f"stage {target.stage} destroyed")


def _parameter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected Key=Value, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "destroy", "_chalice"])
    parser.add_argument("chalice_command", nargs="?", choices=["deploy", "delete"], help=argparse.SUPPRESS)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", help="default: the AWS configuration's")
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--parameter", type=_parameter, action="append", default=[],
                        help="an infra stack parameter, Key=Value (repeatable)")
    parser.add_argument("--demo", action="store_true", help="upload frontend/demo/ too")
    parser.add_argument("--skip-smoke", action="store_true",
                        help="no smoke test (a rehearsal where no Lambda runs)")
    args = parser.parse_args(argv)
    if args.command == "_chalice":
        return _chalice_child(args.chalice_command, args.stage, args.project_dir)
    target = Target(stage=args.stage, project_dir=args.project_dir.resolve(), region=args.region,
                    parameters=dict(args.parameter))
    try:
        if args.command == "deploy":
            deploy(target, demo=args.demo, smoke=not args.skip_smoke)
        else:
            destroy(target)
    except DeployError as error:
        print(f"{args.command} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
