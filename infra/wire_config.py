"""Write the `infra/` stack outputs into `.chalice/config.json` as a stage's environment variables.

    python infra/wire_config.py --stage dev [--stack-name webim-dev] [--region us-east-1]

Each output becomes one variable by `chalicelib.settings.output_to_env_name`
(`JobsQueueUrl` -> `JOBS_QUEUE_URL`); `FrontendUrl` is for people, not for the
functions, so it is left out. Only `stages.<stage>.environment_variables` changes: other stages,
other keys and other variables of that stage stay as they are.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chalicelib.settings import output_to_env_name  # noqa: E402  (needs the repo root on sys.path)

DEFAULT_CONFIG_PATH = REPO_ROOT / ".chalice" / "config.json"
# Outputs that are not environment variables of the functions (the deploy state bucket is
# for infra/deploy.py only).
EXCLUDED_OUTPUTS = frozenset({"FrontendUrl", "DeployStateBucket", "FrontendDistributionDomain"})


def outputs_to_env(outputs: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """CloudFormation `Outputs` entries (`OutputKey`/`OutputValue`) -> environment variables."""
    return {
        output_to_env_name(output["OutputKey"]): output["OutputValue"]
        for output in outputs
        if output["OutputKey"] not in EXCLUDED_OUTPUTS
    }


def merge_env(config: Mapping[str, Any], stage: str, env: Mapping[str, str]) -> dict[str, Any]:
    """A copy of `config` with `env` written into `stages.<stage>.environment_variables`."""
    merged: dict[str, Any] = copy.deepcopy(dict(config))
    stage_config = merged.setdefault("stages", {}).setdefault(stage, {})
    stage_config.setdefault("environment_variables", {}).update(env)
    return merged


def read_stack_outputs(stack_name: str, region: str | None = None) -> list[dict[str, str]]:
    client = boto3.session.Session(region_name=region).client("cloudformation")
    stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    return list(stacks[0].get("Outputs", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="chalice stage, e.g. dev")
    parser.add_argument("--stack-name", help="CloudFormation stack (default: webim-<stage>)")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="chalice config.json")
    args = parser.parse_args(argv)

    stack_name = args.stack_name or f"webim-{args.stage}"
    try:
        outputs = read_stack_outputs(stack_name, args.region)
    except ClientError as error:
        print(f"cannot read stack {stack_name}: {error}", file=sys.stderr)
        return 1
    env = outputs_to_env(outputs)
    if not env:
        print(f"stack {stack_name} has no outputs to wire", file=sys.stderr)
        return 1

    config_path: Path = args.config
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    merged = merge_env(config, args.stage, env)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(merged, indent=2) + "\n")
    for name, value in sorted(env.items()):
        print(f"{args.stage}: {name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
