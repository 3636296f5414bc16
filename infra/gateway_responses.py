"""Puts API Gateway's own REST answers into the documented error shape on a deployed stage.

API Gateway answers some requests without calling Lambda: an unknown path or a method a path
does not have (403 `{"message": "Missing Authentication Token"}`), throttling (429), and its
other 4XX/5XX. `gateway_responses.json` gives each the shape `{"error": {"code", "message"}}`
(and a 404 for an unknown route); the local stack answers from the same file.

`chalice deploy` builds the REST API from its own swagger (no template to merge) and
overwrites it on a later deploy, so run this after every `chalice deploy`:

    .venv/bin/python infra/gateway_responses.py --stage dev   # [--region ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import boto3

HERE = Path(__file__).resolve().parent
RESPONSES = HERE / "gateway_responses.json"
CHALICE_DIR = HERE.parent / ".chalice"


def load_responses() -> dict[str, dict[str, Any]]:
    return dict(json.loads(RESPONSES.read_text()))


def body_of(spec: dict[str, Any]) -> str:
    return json.dumps({"error": {"code": spec["code"], "message": spec["message"]}})


def rest_api_id(chalice_dir: Path, stage: str) -> str:
    deployed = json.loads((chalice_dir / "deployed" / f"{stage}.json").read_text())
    for resource in deployed["resources"]:
        if resource.get("resource_type") == "rest_api":
            return str(resource["rest_api_id"])
    raise LookupError(f"no REST API in .chalice/deployed/{stage}.json")


def api_gateway_stage(chalice_dir: Path, stage: str) -> str:
    config = json.loads((chalice_dir / "config.json").read_text())
    return str(config.get("stages", {}).get(stage, {}).get("api_gateway_stage")
               or config.get("api_gateway_stage", "api"))


def install(client: Any, api_id: str, stage_name: str) -> None:
    """Every response in the file, then a deployment so the stage serves them."""
    for response_type, spec in load_responses().items():
        params: dict[str, Any] = {
            "restApiId": api_id,
            "responseType": response_type,
            # CORS as on the app's routes, so a page can read the error
            "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"},
            "responseTemplates": {"application/json": body_of(spec)},
        }
        if "statusCode" in spec:
            params["statusCode"] = str(spec["statusCode"])
        client.put_gateway_response(**params)
    client.create_deployment(restApiId=api_id, stageName=stage_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region")
    parser.add_argument("--chalice-dir", type=Path, default=CHALICE_DIR)
    args = parser.parse_args(argv)
    try:
        api_id = rest_api_id(args.chalice_dir, args.stage)
    except (OSError, LookupError) as error:
        print(f"no deployed REST API for stage {args.stage} ({error}); run `chalice deploy` first",
              file=sys.stderr)
        return 1
    install(boto3.client("apigateway", region_name=args.region), api_id,
            api_gateway_stage(args.chalice_dir, args.stage))
    print(f"gateway responses installed on REST API {api_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
