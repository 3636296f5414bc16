"""The chat page's conversation list comes a page at a time (protocol.md §6.6): a buyer pushed
past the first page by newer conversations appears when the list is scrolled to its end."""
from __future__ import annotations

import asyncio

import pytest
from playwright.sync_api import expect

from tests.browser.pages import ChatPage, signed_in, unique
from tests.browser.support import NewContext, run_async
from tests.conftest import LocalStackProcess
from webim_client import Client, WebSocketTransport

pytestmark = pytest.mark.e2e

NEWER = 55  # more than one page (50) of newer conversations


async def write(stack: LocalStackProcess, name: str, to: str, text: str) -> None:
    client = Client(WebSocketTransport(stack.ws_url_as(name)))
    await client.start()
    try:
        sent = await client.send(text, to={"kind": "user", "id": to})
        await asyncio.wait_for(sent.accepted, 20)
    finally:
        await client.close()


async def buyer_then_strangers(stack: LocalStackProcess, seller: str, buyer: str) -> None:
    await write(stack, buyer, seller, "is it still for sale?")
    strangers = [unique("stranger") for _ in range(NEWER)]
    for batch in range(0, NEWER, 10):
        await asyncio.gather(*(write(stack, name, seller, "buy mine") for name in strangers[batch:batch + 10]))
    await receive_all(stack, seller, NEWER + 1)


async def receive_all(stack: LocalStackProcess, name: str, count: int) -> None:
    """`name` receives (and acks) everything on another device first: the page's pull on connect
    then brings nothing, so its list shows only what its pages bring (a pulled message would
    add its conversation to the list whatever the page, racing the first page)."""
    client = Client(WebSocketTransport(stack.ws_url_as(name)))
    await client.start()
    try:
        for _ in range(count):
            await asyncio.wait_for(client.inbox.get(), 30)
    finally:
        await client.close()  # sends the pending ack first


def test_scrolling_to_the_end_of_the_list_loads_the_next_page(local_stack: LocalStackProcess, base_url: str,
                                                              new_context: NewContext) -> None:
    seller, buyer = unique("paged-seller"), unique("paged-buyer")
    run_async(buyer_then_strangers(local_stack, seller, buyer))
    page = ChatPage(signed_in(new_context, base_url, seller).new_page()).open()
    rows = page.page.locator("#conversations li")
    expect(rows).to_have_count(50)
    expect(page.row(f"user:{buyer}")).to_have_count(0)  # the oldest: not on the first page
    page.page.locator("#conversations").evaluate("list => { list.scrollTop = list.scrollHeight; }")
    expect(rows).to_have_count(NEWER + 1)
    expect(page.row(f"user:{buyer}").locator(".preview")).to_have_text("is it still for sale?")
    expect(page.page.locator("#conversations")).to_have_attribute("data-more", "false")
