"""The Python client (SDK) for WebIM: the protocol of docs/protocol.md over a transport.

    client = Client(WebSocketTransport(url_with_token))
    await client.start()                      # connects, then pulls what came while offline
    sent = await client.send(text="hi", to={"kind": "user", "id": "bob"})
    await sent.delivered                      # ack:N arrived
    message = await client.inbox.get()        # incoming messages: in order, no duplicates
"""
from webim_client.client import Client, ClientError, Outgoing
from webim_client.long_poll import LongPollTransport
from webim_client.transport import FaultyTransport, Transport, WebSocketTransport

__all__ = [
    "Client", "ClientError", "FaultyTransport", "LongPollTransport", "Outgoing", "Transport", "WebSocketTransport",
]
