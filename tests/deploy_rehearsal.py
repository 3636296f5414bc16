"""Test support for the deploy rehearsal: moto's server mode with the shims `chalice deploy` needs.

moto 5.2.5 in server mode runs `chalice deploy`/`chalice delete` end to end (Lambdas are created,
never invoked) once five gaps are bridged, all on the moto side, so chalice and infra/deploy.py
run unmodified (docs/platform facts "moto server mode cannot run chalice deploy unmodified"):

1. ImportRestApi reads `info.description`, which chalice's swagger does not have (KeyError, 500):
   an empty description is supplied.
2. ImportRestApi/PutRestApi accept only OpenAPI 3 ("Only OpenAPI 3.x.x"), chalice sends
   Swagger 2.0: the document is labelled 3.0.1 for moto (the paths and the
   x-amazon-apigateway-integration parts moto reads are the same in both).
3. PutRestApi passes only the integration fields a document has, but put_integration requires
   `uri` and `httpMethod`, which chalice's CORS `mock` integrations lack (TypeError, 500): they
   default to empty (a MOCK integration needs neither).
4. apigatewayv2 has no deployments route (CreateDeployment is a 404): one is added, answering a
   new deployment id.
5. apigatewayv2 has no UpdateStage (the route exists for GET/DELETE, the PATCH finds no handler),
   which infra/deploy.py calls to throttle the WebSocket stage: one is added that merges the
   request's defaultRouteSettings and routeSettings into moto's stage, so the rehearsal reads
   the throttling back with GetStage (the REST stage's UpdateStage is moto's own).
6. CloudFormation has no rollback: a resource failing in CreateStack leaves the stack
   CREATE_IN_PROGRESS with what was made (and CreateStack answers 500). As AWS does, the shim
   records the resource's CREATE_FAILED event, deletes what the create made except `Retain`
   resources (a `RetainExceptOnCreate` one is deleted: the policy's create-rollback half), and
   leaves the stack ROLLBACK_COMPLETE (its resources' physical ids gone).
7. moto's stack deletion keeps only `DeletionPolicy: Retain`: `RetainExceptOnCreate` is kept too
   (its delete half, as AWS does).
8. Lambda has no GetAccountSettings (a 404): one answers moto's defaults (limit 1000, as a
   raised AWS account), which infra/deploy.py's quota check reads.
9. UpdateStack's "No updates are to be performed" compares the stack's parsed parameters with
   the request's text, so a `Number` parameter given again (WaitApiRate "100" against 100)
   always looks changed; the update then fails on any UsePreviousValue of a parameter the
   create left at its default (KeyError, 500). Both sides are compared as CloudFormation's
   text, as AWS does.
Each shim changes only what moto lacks; they are undone by `stop()`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from moto.apigateway.models import APIGatewayBackend
from moto.apigatewayv2 import urls as apigatewayv2_urls
from moto.apigatewayv2.responses import ApiGatewayV2Response
from moto.awslambda import urls as lambda_urls
from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import Event, Stack
from moto.cloudformation.responses import CloudFormationResponse
from moto.server import ThreadedMotoServer

from devstack import moto_speedups, moto_transactions

DEPLOYMENTS_ROUTE = "{0}/v2/apis/(?P<api_id>[^/]+)/deployments$"
ACCOUNT_SETTINGS_ROUTE = "{0}/(?P<api_version>[^/]+)/account-settings/?$"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_openapi3(api_doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(api_doc)
    if "swagger" in doc:
        doc.pop("swagger")
        doc["openapi"] = "3.0.1"
    doc["info"] = {"description": "", **doc.get("info", {})}
    return doc


def _create_deployment(*args: Any) -> tuple[int, dict[str, str], str]:
    return 201, {}, json.dumps({"deploymentId": uuid.uuid4().hex[:6], "deploymentStatus": "DEPLOYED"})


def _update_stage(response: ApiGatewayV2Response) -> tuple[int, dict[str, str], str]:
    parts = response.path.split("/")
    stage = response.apigatewayv2_backend.get_stage(parts[-3], unquote(parts[-1]))
    params = json.loads(response.body or "{}")
    stage.default_route_settings = {**stage.default_route_settings, **params.get("defaultRouteSettings", {})}
    for route, settings in params.get("routeSettings", {}).items():
        stage.route_settings[route] = {**stage.route_settings.get(route, {}), **settings}
    stage.updated = datetime.now()
    return 200, {}, json.dumps(stage.to_json())


def _account_settings(*args: Any) -> tuple[int, dict[str, str], str]:
    return 200, {}, json.dumps({  # shim 8
        "AccountLimit": {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 1000,
                         "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800, "TotalCodeSize": 80530636800},
        "AccountUsage": {"FunctionCount": 0, "TotalCodeSize": 0}})


def _as_text(value: Any) -> str:
    """A parameter's value as CloudFormation's API gives it (moto parses Number and List types)."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _validate_different_update(response: CloudFormationResponse, incoming_params: list[dict[str, Any]] | None,
                               stack_body: str, old_stack: Stack) -> None:
    """Shim 9: moto's own check, on the parameters' text."""
    if incoming_params and stack_body:
        old = {key: _as_text(value) for key, value in old_stack.stack_parameters.items()}
        new = {key: _as_text(value) for key, value in
               response._get_param_values(incoming_params, old_stack.stack_parameters).items()}
        if old_stack.template == stack_body and old == new:
            raise ValidationError(old_stack.name, message="No updates are to be performed.")


class _NoOutputs(dict[str, Any]):
    """A failed stack's outputs: none, and no exports."""

    exports: list[Any] = []  # noqa: RUF012  (never written)


def _rollback_create(stack: Stack, error: Exception) -> None:
    """Shim 6: what CloudFormation does with a create that fails."""
    resource_map = stack.resource_map
    failed = next((name for name in resource_map._resource_json_map if name not in resource_map._parsed_resources),
                  stack.name)
    event = Event(stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=failed,
                  physical_resource_id="", resource_type=resource_map._resource_json_map.get(failed, {}).get(
                      "Type", "AWS::CloudFormation::Stack"),
                  resource_status="CREATE_FAILED", resource_status_reason=f"{type(error).__name__}: {error}",
                  resource_properties=None)
    stack.events.append(event)
    stack._add_stack_event("ROLLBACK_IN_PROGRESS",
                           resource_status_reason=f"The following resource(s) failed to create: [{failed}].")
    resource_map.delete()  # moto's own skips `Retain` only: RetainExceptOnCreate goes, as on AWS
    # moto makes resources lazily, when an output or a resource listing names them: only the
    # retained ones stay known, and a failed stack has no outputs
    resource_map._resource_json_map = {name: resource for name, resource in resource_map._resource_json_map.items()
                                       if resource_map._parsed_resources.get(name) is not None}
    stack.output_map = _NoOutputs()  # type: ignore[assignment]
    stack._add_stack_event("ROLLBACK_COMPLETE")
    stack.status = "ROLLBACK_COMPLETE"


class ShimmedMotoServer:
    """ThreadedMotoServer on a free port, with the shims above applied while it runs."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._undo: list[Callable[[], None]] = []

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, replacement)
        self._undo.append(lambda: setattr(owner, name, original))

    def start(self) -> None:
        # Plain moto while the server runs (the local stack's patches are installed process-wide
        # by any earlier test that started it): its speed-ups keep each backend's URL table from
        # its first use, so shim 4's route would be missing had an in-process call listed
        # apigatewayv2's URLs before; its untracked models let moto S3's keys be collected
        # undisposed (a ResourceWarning, an error under -W error).
        for patch in (moto_speedups, moto_transactions):
            if patch.installed():
                patch.uninstall()
                self._undo.append(patch.install)
        import_rest_api = APIGatewayBackend.import_rest_api
        put_rest_api = APIGatewayBackend.put_rest_api
        put_integration = APIGatewayBackend.put_integration

        def import_rest_api_shim(backend: APIGatewayBackend, api_doc: dict[str, Any], fail_on_warnings: bool) -> Any:
            return import_rest_api(backend, _as_openapi3(api_doc), False)  # shims 1, 2

        def put_rest_api_shim(backend: APIGatewayBackend, function_id: str, api_doc: dict[str, Any],
                              fail_on_warnings: bool, mode: str = "merge") -> Any:
            return put_rest_api(backend, function_id, _as_openapi3(api_doc), False, mode)  # shim 2

        def put_integration_shim(backend: APIGatewayBackend, function_id: str, resource_id: str, method_type: str,
                                 integration_type: str, uri: str = "", integration_method: str = "",
                                 **kwargs: Any) -> Any:
            # shim 3: PutRestApi leaves out uri and httpMethod when the document has none
            return put_integration(backend, function_id, resource_id, method_type, integration_type, uri,
                                   integration_method, **kwargs)

        self._patch(APIGatewayBackend, "import_rest_api", import_rest_api_shim)
        self._patch(APIGatewayBackend, "put_rest_api", put_rest_api_shim)
        self._patch(APIGatewayBackend, "put_integration", put_integration_shim)
        apigatewayv2_urls.url_paths[DEPLOYMENTS_ROUTE] = _create_deployment  # shim 4
        self._undo.append(lambda: apigatewayv2_urls.url_paths.pop(DEPLOYMENTS_ROUTE, None))
        if "update_stage" not in ApiGatewayV2Response.__dict__:  # shim 5 (a later moto may have its own)
            ApiGatewayV2Response.update_stage = _update_stage  # type: ignore[attr-defined]
            self._undo.append(lambda: delattr(ApiGatewayV2Response, "update_stage"))
        self._shim_cloudformation_and_lambda()
        self._server.start()

    def _shim_cloudformation_and_lambda(self) -> None:
        lambda_urls.url_paths[ACCOUNT_SETTINGS_ROUTE] = _account_settings  # shim 8

        def unroute() -> None:
            lambda_urls.url_paths.pop(ACCOUNT_SETTINGS_ROUTE, None)

        self._undo.append(unroute)
        create_resources, delete_stack = Stack.create_resources, Stack.delete

        def create_resources_shim(stack: Stack) -> None:
            try:
                create_resources(stack)
            except Exception as error:  # noqa: BLE001  (any resource's failure: shim 6)
                _rollback_create(stack, error)

        def delete_shim(stack: Stack) -> None:
            for resource in stack.resource_map._resource_json_map.values():  # shim 7
                if resource.get("DeletionPolicy") == "RetainExceptOnCreate":
                    resource["DeletionPolicy"] = "Retain"
            delete_stack(stack)

        self._patch(Stack, "create_resources", create_resources_shim)
        self._patch(Stack, "delete", delete_shim)
        self._patch(CloudFormationResponse, "_validate_different_update", _validate_different_update)

    def stop(self) -> None:
        self._server.stop()
        while self._undo:
            self._undo.pop()()


class ServerProcess:
    """The shimmed server in a process of its own (`python -m tests.deploy_rehearsal`): nothing
    an earlier test did to moto in the test process (the local stack's patches, backends'
    state, mocks) can reach the rehearsal's AWS."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        from tests import tiers  # noqa: PLC0415  (not when it runs as the server's own process)

        tiers.require_marker("e2e", "a subprocess stack (the rehearsal's moto server)")
        self._process = subprocess.Popen([sys.executable, "-m", "tests.deploy_rehearsal", str(self.port)],
                                         cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True,
                                         env={k: v for k, v in os.environ.items()
                                              if not k.startswith(("AWS_", "MOTO_", "WEBIM_"))})
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # blocks until the server listens (or the child died)
        if line.strip() != "ready":
            raise RuntimeError(f"the rehearsal's moto server did not start: {line!r}")

    def stop(self) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the child stops its server and exits
            self._process.wait(timeout=30)
            if self._process.stdout is not None:
                self._process.stdout.close()


def main() -> None:
    server = ShimmedMotoServer(int(sys.argv[1]))
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    main()
