"""The Python client (SDK) for WebIM: the protocol of docs/protocol.md over a transport.

    client = Client(WebSocketTransport(url_with_token))
    await client.start()                      # connects, then pulls what came while offline
    sent = await client.send(text="hi", to={"kind": "user", "id": "bob"})
    await sent.delivered                      # ack:N arrived
    message = await client.inbox.get()        # incoming messages: in order, no duplicates

Groups (docs/protocol.md §13):

    group = await client.create_group("Bike parts", [{"kind": "user", "id": "bob"}])
    cid = group["conversation_id"]            # "g_...": send, history, sync as for 1:1
    await client.send(text="hi all", conversation_id=cid)
    await client.add_members(cid, [{"kind": "user", "id": "carol"}])   # owner/admins; role="admin"
    page = await client.group_members(cid)    # {members, more, cursor}: pass cursor= for the next
    receipts = await client.receipts(cid, seq=2)   # {acked, read, members, ...}: who has it
    await client.rename_group(cid, "Bikes"); await client.set_role(cid, bob, "admin")
    await client.remove_member(cid, bob); await client.leave_group(cid)

Photos (docs/protocol.md §14.1): the bytes go straight to S3 (the local stack's /s3 front),
never through the API:

    sent = await client.send_image(Photo(png_bytes, "image/png", width=800, height=600), text="the part",
                                   to={"kind": "user", "id": "bob"})   # upload slot, POST, send
    message = await client.inbox.get()        # message["image"]: {url, url_expires, content_type, ...}
    data = await client.download_image(message)   # refreshes an expiring URL (media_url) itself

A refused upload raises MediaHttpError (S3's status and code); the send itself retries as a text
does (the same id and upload_id: stored once).

Changes are idempotent by their frame id, kept across the SDK's retries (pass `client_id=` to
repeat one yourself after a crash); an `error` raises ClientError (`not_allowed`, `not_member`,
`group_full`, `too_many_groups`, `cannot_add`, `owner_must_stay`, ...). Membership changes arrive
on `inbox` as event messages (`text` "" and `event`: created, joined, removed, left, renamed, role); a group
you are added to while connected starts at its `joined` event. Group acks are batched
(`Client(transport, group_ack=2.0, group_ack_messages=20)`, or a `ClientOptions`); call
`await client.flush_acks()` before going idle (`close()` does it).
"""
from webim_client.client import Client, ClientError, ClientOptions, Outgoing, Photo
from webim_client.long_poll import LongPollTransport
from webim_client.media import MediaHttpError
from webim_client.transport import FaultyTransport, Transport, WebSocketTransport

__all__ = [
    "Client", "ClientError", "ClientOptions", "FaultyTransport", "LongPollTransport", "MediaHttpError", "Outgoing",
    "Photo", "Transport", "WebSocketTransport",
]
