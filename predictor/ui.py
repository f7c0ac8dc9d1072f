"""The try-it page at ``/ui/``: static files served beside the API, same origin.

The page (``predictor/ui_static/``) calls only the public v1 API with relative URLs.
It is a mounted app of its own, so only requests under ``/ui/`` reach it and the
predict path gains no middleware. Its headers forbid inline script and style and
any request to another origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_PATH = "/ui"
STATIC_DIR = Path(__file__).parent / "ui_static"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Revalidated on every load (StaticFiles answers 304), so an upgrade shows at once.
    (b"cache-control", b"no-cache"),
]


class PageHeaders:
    """Adds PAGE_HEADERS to every response of the app it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *PAGE_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_ui(app: FastAPI) -> None:
    app.mount(
        UI_PATH,
        PageHeaders(StaticFiles(directory=STATIC_DIR, html=True)),
        name="ui",
    )
