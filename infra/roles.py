"""The Lambda functions' IAM roles, made by `make deploy` with the region in their names.

chalice names the roles it manages `<app>-<stage>-<function>`, account-wide (IAM has no
regions), so the same stage in a second region of one account would take over, and on destroy
delete, the first region's roles. So chalice manages none (`manage_iam_role: false` in the
stage of .chalice/config.json) and runs each function with the role whose ARN
(`iam_role_arn`) this module writes there, made before `chalice deploy` (infra/deploy.py):

- `<app>-<stage>-<region>-functions`: the stage's policy file (`iam_policy_file`,
  `policy-<stage>.json`), for every function without a policy file of its own;
- `<app>-<stage>-<region>-<function>`: for a function with its own `iam_policy_file` in the
  stage's `lambda_functions` (on_job: `policy-<stage>-jobs.json`).

Each role's one inline policy is its policy file as it is (after infra/stage_settings.py's
`scope-policies`): the files stay the one definition of what the functions may do, and a
policy that changes is put again by the next deploy (PutRolePolicy), without a second
`chalice deploy`. Each role is created with the stack's permissions boundary (RolesBoundary):
no moment without it. Lambda's trust only. `make destroy` deletes them after `chalice delete`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Lambda assumes the roles, nothing else.
TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
DEFAULT_ROLE = "functions"  # the suffix of the role of the stage's own policy file
# The committed config.json's ARNs are placeholders, like its environment (account, region).
PLACEHOLDER_ACCOUNT = "123456789012"
PLACEHOLDER_REGION = "us-east-1"


@dataclass(frozen=True)
class StageRole:
    """One role of a stage in a region: its name, the policy file it carries, and the function
    it is for (None: every function of the stage without a policy file of its own)."""

    name: str
    policy_file: Path
    function: str | None = None

    def policy(self) -> dict[str, Any]:
        return dict(json.loads(self.policy_file.read_text()))


def role_name(app: str, stage: str, region: str, function: str | None = None) -> str:
    """`<app>-<stage>-<region>-<function or "functions">`: IAM's 64 characters hold the longest
    (a 16-letter stage, a 14-letter region, chalice's longest function name here)."""
    return f"{app}-{stage}-{region}-{function or DEFAULT_ROLE}"


def _config(chalice_dir: Path) -> dict[str, Any]:
    return dict(json.loads((chalice_dir / "config.json").read_text()))


def stage_roles(chalice_dir: Path, stage: str, region: str) -> list[StageRole]:
    """The stage's roles in `region`, from its policy files in .chalice/config.json."""
    config = _config(chalice_dir)
    app = str(config["app_name"])
    stage_config = config.get("stages", {}).get(stage, {})
    default_file = stage_config.get("iam_policy_file") or config.get("iam_policy_file") or f"policy-{stage}.json"
    roles = [StageRole(role_name(app, stage, region), chalice_dir / default_file)]
    for function, settings in sorted(stage_config.get("lambda_functions", {}).items()):
        if settings.get("iam_policy_file"):
            roles.append(StageRole(role_name(app, stage, region, function), chalice_dir / settings["iam_policy_file"],
                                   function))
    return roles


def role_arn(account: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{name}"


def merge_role_arns(config: Mapping[str, Any], stage: str, arns: Mapping[str | None, str]) -> dict[str, Any]:
    """`config` with the stage's functions on the given roles (function -> ARN, None: the
    stage's default) and chalice managing none."""
    merged = json.loads(json.dumps(config))
    stage_config = merged.setdefault("stages", {}).setdefault(stage, {})
    stage_config["manage_iam_role"] = False
    for function, arn in arns.items():
        if function is None:
            stage_config["iam_role_arn"] = arn
        else:
            stage_config.setdefault("lambda_functions", {}).setdefault(function, {})["iam_role_arn"] = arn
    return dict(merged)


def function_policy_files(chalice_dir: Path, stage: str) -> dict[str, Path]:
    """chalice's role ARN for a function (its `iam_role_arn`, as config.json says) -> the
    policy file that role carries, for the committed placeholders' region and account."""
    return {role_arn(PLACEHOLDER_ACCOUNT, role.name): role.policy_file
            for role in stage_roles(chalice_dir, stage, PLACEHOLDER_REGION)}


def _current_policies(iam: Any, name: str) -> dict[str, Any]:
    names = [n for page in iam.get_paginator("list_role_policies").paginate(RoleName=name) for n in page["PolicyNames"]]
    return {n: iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in names}


def ensure_role(iam: Any, role: StageRole, boundary_arn: str) -> tuple[str, list[str]]:
    """The role as it must be: created with the boundary when missing, else its boundary, trust
    and inline policy brought back to what they must be (a role that is right is not touched).
    Returns its ARN and what was changed."""
    changed: list[str] = []
    try:
        current = iam.get_role(RoleName=role.name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        current = iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                                  PermissionsBoundary=boundary_arn,
                                  Description=f"webim functions ({role.policy_file.name}), made by make deploy")["Role"]
        changed.append("created")
    else:
        if current.get("PermissionsBoundary", {}).get("PermissionsBoundaryArn") != boundary_arn:
            iam.put_role_permissions_boundary(RoleName=role.name, PermissionsBoundary=boundary_arn)
            changed.append("boundary")
        if current.get("AssumeRolePolicyDocument") != TRUST_POLICY:
            iam.update_assume_role_policy(RoleName=role.name, PolicyDocument=json.dumps(TRUST_POLICY))
            changed.append("trust")
    wanted = role.policy()
    policies = {} if "created" in changed else _current_policies(iam, role.name)
    if policies.get(role.name) != wanted:
        iam.put_role_policy(RoleName=role.name, PolicyName=role.name, PolicyDocument=json.dumps(wanted))
        changed.append(role.policy_file.name)
    for other in sorted(set(policies) - {role.name}):  # the file is the whole of what the role may do
        iam.delete_role_policy(RoleName=role.name, PolicyName=other)
        changed.append(f"-{other}")
    return str(current["Arn"]), changed


def delete_role(iam: Any, name: str) -> bool:
    """The role and its inline policies; False when there is none."""
    try:
        for policy in _current_policies(iam, name):
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        iam.delete_role(RoleName=name)
    except iam.exceptions.NoSuchEntityException:
        return False
    return True
