"""The long poll's wait API: one definition (infra/template.yaml), deployed by CloudFormation and
run by the local stack (devstack/wait_api.py); a held wait runs no function of ours.

The local stack serves the app in this process here, behind the same gateway and wait API as
`make run`, so every function invocation can be counted.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.wait_api import TEMPLATE, WaitApiDefinition, local_wait_url
from tests.wait_fixtures import CountingInvoker, login, stack

__all__ = ["stack"]  # the fixture


def bodies(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    messages = response.json()["ReceiveMessageResponse"]["ReceiveMessageResult"]["messages"] or []
    return [json.loads(m["Body"]) for m in messages]


def test_a_held_wait_runs_no_function_and_the_authorizer_once_per_token(stack: tuple[str, CountingInvoker]
                                                                        ) -> None:
    base, invoker = stack
    bob, alice = login(base, "bob"), login(base, "alice")
    opened = httpx.post(base + "/api/lp/open", headers={"Authorization": f"Bearer {bob}"}).json()
    senders = httpx.post(base + "/api/lp/open", headers={"Authorization": f"Bearer {alice}"}).json()
    wait_headers = {"Authorization": f"Bearer {opened['wait_token']}"}

    async def scenario() -> tuple[httpx.Response, Counter[str]]:
        async with httpx.AsyncClient(timeout=40) as http:
            held = asyncio.create_task(http.post(opened["wait_url"], headers=wait_headers))
            while invoker.calls["lp_wait_authorizer"] == 0:  # the wait reached its authorizer
                await asyncio.sleep(0.01)
            while_held = Counter(invoker.calls)
            await http.post(base + "/api/lp/send", params={"connection_id": senders["connection_id"]},
                            headers={"Authorization": f"Bearer {alice}"},
                            content=json.dumps({"action": "send", "id": "s1", "to": {"kind": "user", "id": "bob"},
                                                "text": "hi"}))
            return await asyncio.wait_for(held, 30), while_held

    answer, while_held = asyncio.run(scenario())
    assert [json.loads(ring["f"])["text"] for ring in bodies(answer)] == ["hi"]
    # the send is alice's one REST call; bob's wait added only its authorizer's one run
    assert invoker.calls - while_held == Counter({"rest /lp/send": 1})
    assert while_held["lp_wait_authorizer"] == 1 and not any(k.startswith("rest /lp/poll") for k in invoker.calls)
    # the next wait with the same token: the authorizer's answer is cached (its TTL), nothing runs
    before = Counter(invoker.calls)
    httpx.post(base + "/api/lp/send", params={"connection_id": senders["connection_id"]},
               headers={"Authorization": f"Bearer {alice}"},
               content=json.dumps({"action": "send", "id": "s2", "to": {"kind": "user", "id": "bob"}, "text": "2"}))
    assert [ring["n"] for ring in bodies(httpx.post(opened["wait_url"], headers=wait_headers, timeout=40))] == [2]
    assert invoker.calls - before == Counter({"rest /lp/send": 1})


def test_cors_follows_the_definition(stack: tuple[str, CountingInvoker]) -> None:
    base, _ = stack
    definition = WaitApiDefinition.load()
    preflight = httpx.options(local_wait_url(base), headers={"Origin": "https://shop.example",
                                                             "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == ",".join(definition.cors["AllowHeaders"])
    assert preflight.headers["access-control-max-age"] == str(definition.cors["MaxAge"])


# -- one definition: the local stack runs what CloudFormation deploys --------------------------

def test_the_definition_is_what_the_app_answers() -> None:
    """The authorizer the template names is the app's function, and the context key the
    integration reads is the one that function answers."""
    definition = WaitApiDefinition.load()
    assert (definition.method, definition.path, definition.operation) == ("POST", "/lp/wait", "ReceiveMessage")
    app_py = (TEMPLATE.parent.parent / "app.py").read_text()
    assert f'@app.lambda_function(name="{definition.authorizer_function}")' in app_py
    queue_key = definition.parameters["QueueUrl"].removeprefix("$context.authorizer.")
    assert f'"context": {{"{queue_key}": queue_url}}' in app_py
    # a ring is handed out once: invisible until SQS's shortest retention (storage/doorbells.py) drops it
    from chalicelib.storage.doorbells import RETENTION_SECONDS  # noqa: PLC0415
    assert int(definition.parameters["VisibilityTimeout"]) >= RETENTION_SECONDS
    assert int(definition.parameters["WaitTimeSeconds"]) <= 20 < definition.timeout_seconds


def test_the_local_wait_api_follows_a_changed_definition(tmp_path: Path) -> None:
    """Change the template and the local stack changes with it (nothing is written twice)."""
    text = TEMPLATE.read_text()
    changed = (text.replace("RouteKey: POST /lp/wait", "RouteKey: POST /lp/hold")
               .replace('WaitTimeSeconds: "20"', 'WaitTimeSeconds: "3"')
               .replace("AuthorizerResultTtlInSeconds: 300", "AuthorizerResultTtlInSeconds: 0")
               .replace("IdentitySource: [$request.header.Authorization]",
                        "IdentitySource: [$request.header.X-Wait-Token]"))
    assert changed.count("/lp/hold") == 1 and 'WaitTimeSeconds: "3"' in changed
    copy = tmp_path / "template.yaml"
    copy.write_text(changed)
    definition = WaitApiDefinition.load(copy)
    assert (definition.path, definition.authorizer_ttl, definition.identity_source) == (
        "/lp/hold", 0, ("$request.header.X-Wait-Token",))
    assert definition.parameters["WaitTimeSeconds"] == "3"
    copy.write_text(text.replace("IntegrationSubtype: SQS-ReceiveMessage", "IntegrationSubtype: SQS-PurgeQueue"))
    with pytest.raises(KeyError):  # an integration the local stack cannot run stops it, loudly
        WaitApiDefinition.load(copy)


def test_every_stage_deploys_the_wait_api_throttle_of_its_table() -> None:
    from infra import deploy, scale_model, stage_settings  # noqa: PLC0415

    derived = scale_model.prod_settings()
    assert deploy.wait_api_throttle("prod") == {"WaitApiRate": str(derived.wait_rate),
                                                "WaitApiBurst": str(derived.wait_burst)}
    dev = stage_settings.throttling_for("dev")
    assert deploy.wait_api_throttle("dev") == {"WaitApiRate": str(dev.wait_rate), "WaitApiBurst": str(dev.wait_burst)}
    template = TEMPLATE.read_text()
    assert "ThrottlingRateLimit: !Ref WaitApiRate" in template and "ThrottlingBurstLimit: !Ref WaitApiBurst" in template
