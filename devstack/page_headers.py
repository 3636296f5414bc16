"""Security headers on frontend/'s files, as CloudFront's response headers policy sets them on
AWS (infra/template.yaml, FrontendHeadersPolicy; the same directives but `connect-src`).

The pages run only their own files: no inline script or style, no eval, nothing framed. The chat
page may be framed by nobody unless `WEBIM_FRAME_ANCESTORS` lists host origins (CSP source
expressions, e.g. `https://shop.example`). The widget is not framed: host pages load
widget.js and its modules cross-origin (CORS), which these headers leave alone.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

NOT_FRAMED = "'none'"


def content_security_policy(frame_ancestors: str = NOT_FRAMED, connect: str = "'self'", media: str = "") -> str:
    """`media`: the local S3 front's origin (MEDIA_ENDPOINT_URL), for a page opened under
    another name (localhost) than the one the app presigns for (127.0.0.1)."""
    media = f" {media}" if media else ""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # the pages' empty favicon and photo previews are data: URLs, a photo being sent is a blob:
        # URL; locally the media bucket is on this origin (on AWS img-src also lists the bucket)
        f"img-src 'self' data: blob:{media}",
        f"connect-src {connect}{media}",  # locally the APIs are on this origin ('self' covers ws://)
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
        f"frame-ancestors {frame_ancestors}",
    ])


def page_headers(frame_ancestors: str | None = None, media_endpoint_url: str | None = None) -> dict[str, str]:
    frame_ancestors = frame_ancestors or os.environ.get("WEBIM_FRAME_ANCESTORS") or NOT_FRAMED
    media = urlsplit(media_endpoint_url or "")
    headers = {
        "Content-Security-Policy": content_security_policy(
            frame_ancestors, media=f"{media.scheme}://{media.netloc}" if media.netloc else ""),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    if frame_ancestors == NOT_FRAMED:  # X-Frame-Options cannot list origins: only when none may frame
        headers["X-Frame-Options"] = "DENY"
    return headers


class PageHeaders:
    """ASGI middleware adding `headers` to every HTTP response of the app it wraps."""

    def __init__(self, app: Any, headers: dict[str, str]) -> None:
        self._app = app
        self._headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self._headers]}
            await send(message)

        await self._app(scope, receive, with_headers)
