"""What chalice cannot set on a stage, applied around `chalice deploy` (by infra/deploy.py):

- `scope-policies` (before `chalice deploy`): the functions' permission to push to WebSocket
  connections (`execute-api:ManageConnections`) names the stage's own WebSocket API. The API's
  id exists only after the first deploy, so the committed policy files hold the placeholder
  `WEBSOCKET_API_ID` (which matches no API: pushes are refused until the policy is scoped) and
  this writes the deployed id into them, as wire_config.py writes the stack's outputs into
  config.json. The deploy puts the files on the functions' roles (infra/roles.py), so a first
  deploy, which creates the API, puts the scoped files on the roles once more afterwards.
- `throttle` (after `chalice deploy`): API Gateway stage throttling, REST (every method) and
  WebSocket (every route), from `THROTTLING` below (prod's derived by infra/scale_model.py).
  chalice builds both stages without it, and
  CloudFormation cannot change a stage that chalice, not a stack, owns.

    .venv/bin/python infra/stage_settings.py scope-policies --stage dev --region eu-west-1 --account 111122223333
    .venv/bin/python infra/stage_settings.py throttle --stage dev [--region ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script: infra/ is on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from infra.scale_model import ProdSettings, prod_settings  # noqa: E402  (needs the repo root on sys.path)

HERE = Path(__file__).resolve().parent
CHALICE_DIR = HERE.parent / ".chalice"
PLACEHOLDER = "WEBSOCKET_API_ID"
CALLBACKS_SID = "WebSocketCallbacks"
CALLBACK_METHODS = ("POST", "GET", "DELETE")  # post_to_connection, get_connection, delete_connection


@dataclass(frozen=True)
class Throttle:
    """Steady requests per second and burst (the token bucket), for the whole stage: all
    clients together. They cap a flood before it reaches Lambda; per-address limits are WAF's
    (REST) and the app's own (chalicelib/logic/limits.py). docs/deploy.md sizes them. `wait_*`:
    the HTTP API stage of the held poll (infra/template.yaml's WaitApiRate / WaitApiBurst)."""

    rest_rate: float
    rest_burst: int
    websocket_rate: float
    websocket_burst: int
    wait_rate: float
    wait_burst: int


def _derived(settings: ProdSettings) -> Throttle:
    return Throttle(rest_rate=settings.rest_rate, rest_burst=settings.rest_burst,
                    websocket_rate=settings.websocket_rate, websocket_burst=settings.websocket_burst,
                    wait_rate=settings.wait_rate, wait_burst=settings.wait_burst)


THROTTLING = {
    "dev": Throttle(rest_rate=50, rest_burst=100, websocket_rate=100, websocket_burst=200, wait_rate=100,
                    wait_burst=200),
    "prod": _derived(prod_settings()),  # the seed's scale (infra/scale_model.py), never typed here
}


def throttling_for(stage: str) -> Throttle:
    return THROTTLING.get(stage, THROTTLING["dev"])  # a new stage starts with dev's caps


# --- the callback permission --------------------------------------------------------------


def callback_resources(api_id: str, stage_name: str, region: str = "*", account: str = "*") -> list[str]:
    return [f"arn:aws:execute-api:{region}:{account}:{api_id}/{stage_name}/{method}/@connections/*"
            for method in CALLBACK_METHODS]


def scope_callbacks(policy: dict[str, Any], api_id: str, stage_name: str, region: str = "*",
                    account: str = "*") -> dict[str, Any]:
    """The policy with its WebSocketCallbacks statement naming this API and stage only."""
    resources = callback_resources(api_id, stage_name, region, account)
    return {**policy, "Statement": [{**s, "Resource": resources} if s.get("Sid") == CALLBACKS_SID else s
                                    for s in policy["Statement"]]}


def policy_files(chalice_dir: Path, stage: str) -> list[Path]:
    """Every policy file the stage's functions use (the stage's own and per-function ones)."""
    config = json.loads((chalice_dir / "config.json").read_text())
    stage_config = config.get("stages", {}).get(stage, {})
    names = [stage_config.get("iam_policy_file") or f"policy-{stage}.json"]
    names += [f["iam_policy_file"] for f in stage_config.get("lambda_functions", {}).values()
              if "iam_policy_file" in f]
    return [chalice_dir / name for name in dict.fromkeys(names)]


def write_scoped_policies(chalice_dir: Path, stage: str, api_id: str, stage_name: str,
                          region: str = "*", account: str = "*") -> list[Path]:
    """Scope every policy file of the stage to the API; returns the files that changed."""
    changed = []
    for path in policy_files(chalice_dir, stage):
        policy = json.loads(path.read_text())
        scoped = scope_callbacks(policy, api_id, stage_name, region, account)
        if scoped != policy:
            path.write_text(json.dumps(scoped, indent=2) + "\n")
            changed.append(path)
    return changed


# --- stage throttling -----------------------------------------------------------------------


def rest_throttling_patch(limits: Throttle) -> list[dict[str, str]]:
    return [
        {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(limits.rest_rate)},
        {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(limits.rest_burst)},
    ]


def throttle(apigateway: Any, apigatewayv2: Any, rest_api_id: str | None, websocket_api_id: str | None,
             stage_name: str, limits: Throttle) -> None:
    """Idempotent: the same values again change nothing."""
    if rest_api_id:
        apigateway.update_stage(restApiId=rest_api_id, stageName=stage_name,
                                patchOperations=rest_throttling_patch(limits))
    if websocket_api_id:
        apigatewayv2.update_stage(ApiId=websocket_api_id, StageName=stage_name, DefaultRouteSettings={
            "ThrottlingRateLimit": limits.websocket_rate, "ThrottlingBurstLimit": limits.websocket_burst})


# --- deployed state -------------------------------------------------------------------------


def deployed_api_ids(chalice_dir: Path, stage: str) -> dict[str, str]:
    """{"rest_api": id, "websocket_api": id} from .chalice/deployed/<stage>.json (as deployed)."""
    path = chalice_dir / "deployed" / f"{stage}.json"
    if not path.exists():
        return {}
    ids = {}
    for resource in json.loads(path.read_text()).get("resources", []):
        kind = resource.get("resource_type")
        if kind in ("rest_api", "websocket_api"):
            ids[kind] = str(resource[f"{kind}_id"])
    return ids


def api_gateway_stage(chalice_dir: Path, stage: str) -> str:
    config = json.loads((chalice_dir / "config.json").read_text())
    return str(config.get("stages", {}).get(stage, {}).get("api_gateway_stage")
               or config.get("api_gateway_stage", "api"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["scope-policies", "throttle"])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region")
    parser.add_argument("--account", default="*")
    parser.add_argument("--chalice-dir", type=Path, default=CHALICE_DIR)
    args = parser.parse_args(argv)
    ids = deployed_api_ids(args.chalice_dir, args.stage)
    stage_name = api_gateway_stage(args.chalice_dir, args.stage)
    if args.command == "scope-policies":
        if "websocket_api" not in ids:
            print(f"no WebSocket API deployed for stage {args.stage} yet: policies keep {PLACEHOLDER}",
                  file=sys.stderr)
            return 1
        changed = write_scoped_policies(args.chalice_dir, args.stage, ids["websocket_api"], stage_name,
                                        args.region or "*", args.account)
        print(f"scoped to WebSocket API {ids['websocket_api']}: {', '.join(p.name for p in changed) or 'no change'}")
        return 0
    if not ids:
        print(f"no deployed APIs for stage {args.stage}; run `chalice deploy` first", file=sys.stderr)
        return 1
    throttle(boto3.client("apigateway", region_name=args.region), boto3.client("apigatewayv2", region_name=args.region),
             ids.get("rest_api"), ids.get("websocket_api"), stage_name, throttling_for(args.stage))
    print(f"stage throttling set: {throttling_for(args.stage)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
