"""Presence over the running local stack: pushed to conversation peers, pulled in batches."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import LocalStackProcess
from webim_client import Client, WebSocketTransport

pytestmark = pytest.mark.e2e


def pull(stack: LocalStackProcess, token: str, identities: list[dict[str, str]]) -> httpx.Response:
    return httpx.post(stack.base_url + "/api/presence", headers={"Authorization": f"Bearer {token}"},
                      json={"identities": identities})


def test_peers_are_told_and_listing_pages_can_ask(local_stack: LocalStackProcess) -> None:
    async def scenario() -> None:
        buyer = Client(WebSocketTransport(local_stack.ws_url_as("pres-buyer")))
        seller = Client(WebSocketTransport(local_stack.ws_url_as("pres-seller")))
        await buyer.start()
        await seller.start()
        first = await buyer.send("is this available?", to={"kind": "user", "id": "pres-seller"})
        await asyncio.wait_for(first.delivered, 10)
        token = local_stack.dev_login("pres-anyone")
        ids = [{"kind": "user", "id": "pres-seller"}, {"kind": "user", "id": "pres-nobody"}]
        answers = (await asyncio.to_thread(pull, local_stack, token, ids)).json()["presence"]
        assert [a["online"] for a in answers] == [True, False]
        assert answers[0]["last_seen"] is not None and answers[1]["last_seen"] is None
        await seller.close()  # the seller leaves: after the grace period the buyer is told
        event = await asyncio.wait_for(buyer.presence_events.get(), 15)
        assert event["identity"] == {"kind": "user", "id": "pres-seller"} and event["online"] is False
        answers = (await asyncio.to_thread(pull, local_stack, token, ids[:1])).json()["presence"]
        assert answers[0]["online"] is False
        back = Client(WebSocketTransport(local_stack.ws_url_as("pres-seller")))
        await back.start()
        event = await asyncio.wait_for(buyer.presence_events.get(), 15)
        assert event["online"] is True
        await back.close()
        await buyer.close()

    asyncio.run(scenario())


def test_the_pull_takes_at_most_100_ids_and_hides_visitors(local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("pres-lister")
    too_many = [{"kind": "user", "id": f"s{i}"} for i in range(101)]
    refused = pull(local_stack, token, too_many)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_field"
    visitor = httpx.post(local_stack.base_url + "/api/identity/visitor").json()
    answers = pull(local_stack, token, [visitor["identity"]]).json()["presence"]
    assert answers == [{"identity": visitor["identity"], "online": None, "last_seen": None}]
