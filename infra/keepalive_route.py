"""The WebSocket `keepalive` route, taken by API Gateway itself: no Lambda, no DynamoDB, no answer.

A client frame `{"action": "keepalive"}` is routed by chalice's route selection
(`$request.body.action`) to a MOCK integration on a one-way route (no route response: nothing is
sent back, protocol.md §6.1a). It keeps the connection under API Gateway's 10-minute idle limit
for 1 WebSocket message and nothing else; the line's liveness is proven by the presence
heartbeat, the (rarer) Lambda `ping` and its `pong`. The integration keeps a bare `$default`
integration response so that the mock's 200 selects one: a one-way route sends nothing whatever
its integration response says (API Gateway's guide), while a mock that selects none is, on REST
APIs, a configuration error, and an integration error on a WebSocket route may come back to the
client as an error frame: a billed message (docs/deploy.md: a first deploy checks it).

The route is defined once, as data, in `keepalive_route.json`; this module installs that
definition on a deployed stage (a route response only if the file has one), and the local
gateway (devstack/websocket_gateway.py) runs the same file. chalice owns the WebSocket API and,
on every update, deletes all of its routes and integrations and creates its own again
(chalice/deploy/planner.py, `_plan_websocketapi`), so this runs after every `chalice deploy`
(infra/deploy.py does). It is idempotent: a keepalive route already there is replaced (with its
integration), so exactly one stays, exactly as the file says; then a deployment of the stage
(chalice makes none on an update: the stage keeps serving the previous deployment, with the
route, until this one).

    .venv/bin/python infra/keepalive_route.py --stage dev   # [--region ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "keepalive_route.json"
CHALICE_DIR = HERE.parent / ".chalice"


@dataclass(frozen=True)
class KeepaliveRoute:
    """The file's parts, each the keyword arguments of one apigatewayv2 call."""

    route_key: str
    integration: dict[str, Any]  # CreateIntegration
    integration_response: dict[str, Any]  # CreateIntegrationResponse
    route: dict[str, Any]  # CreateRoute (besides RouteKey and Target)
    route_response: dict[str, Any] | None  # CreateRouteResponse; None: a one-way route, no answer


def load(path: Path = DEFINITION) -> KeepaliveRoute:
    data = json.loads(path.read_text())
    return KeepaliveRoute(route_key=data["routeKey"], integration=data["integration"],
                          integration_response=data["integrationResponse"], route=data["route"],
                          route_response=data.get("routeResponse"))


def _routes(client: Any, api_id: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = client.get_routes(ApiId=api_id, **({"NextToken": token} if token else {}))
        routes += page.get("Items", [])
        token = page.get("NextToken")
        if not token:
            return routes


def _remove(client: Any, api_id: str, route: dict[str, Any]) -> None:
    """A keepalive route left by an earlier run (this command run twice without a `chalice
    deploy` between): it and its integration go; the route's responses go with it."""
    client.delete_route(ApiId=api_id, RouteId=route["RouteId"])
    target = str(route.get("Target", ""))
    if target.startswith("integrations/"):
        client.delete_integration(ApiId=api_id, IntegrationId=target.removeprefix("integrations/"))


def install(client: Any, api_id: str, stage_name: str, definition: KeepaliveRoute | None = None) -> str:
    """The route as the definition says, on the API, and a deployment of the stage; returns the
    route's id. `client` is an apigatewayv2 client."""
    route = definition or load()
    for existing in _routes(client, api_id):
        if existing.get("RouteKey") == route.route_key:
            _remove(client, api_id, existing)
    integration_id = client.create_integration(ApiId=api_id, **route.integration)["IntegrationId"]
    client.create_integration_response(ApiId=api_id, IntegrationId=integration_id, **route.integration_response)
    route_id = str(client.create_route(ApiId=api_id, RouteKey=route.route_key, Target=f"integrations/{integration_id}",
                                       **route.route)["RouteId"])
    if route.route_response is not None:
        client.create_route_response(ApiId=api_id, RouteId=route_id, **route.route_response)
    client.create_deployment(ApiId=api_id, StageName=stage_name,
                             Description=f"{route.route_key} route (infra/keepalive_route.py)")
    return route_id


def main(argv: list[str] | None = None) -> int:
    import boto3

    from infra import stage_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region")
    parser.add_argument("--chalice-dir", type=Path, default=CHALICE_DIR)
    args = parser.parse_args(argv)
    api_id = stage_settings.deployed_api_ids(args.chalice_dir, args.stage).get("websocket_api")
    if not api_id:
        print(f"no deployed WebSocket API for stage {args.stage}; run `chalice deploy` first", file=sys.stderr)
        return 1
    install(boto3.client("apigatewayv2", region_name=args.region), api_id,
            stage_settings.api_gateway_stage(args.chalice_dir, args.stage))
    print(f"keepalive route installed on WebSocket API {api_id}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
