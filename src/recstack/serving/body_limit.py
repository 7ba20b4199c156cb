"""``BodyLimit``: ASGI middleware answering 413 to a request body over a size limit.

FastAPI reads and parses the whole body before a handler runs, so a size check in the handler
comes too late: a 2 MB body of 250k history ids has by then cost its parse and its Python
objects. This middleware stands in front of the app: a ``Content-Length`` over the limit is
refused before any byte is read, and a body without one (``Transfer-Encoding: chunked``) is
counted as it arrives and refused as soon as it passes the limit; at most ``max_bytes`` are
ever held. A body within the limit is handed to the app unchanged.

Example::

    app.add_middleware(BodyLimit, max_bytes=1 << 20)
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses HTTP request bodies over ``max_bytes`` with 413 before the app sees them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(send, declared, self.max_bytes, declared=True)
            return
        messages: list[Message] = []
        received = 0
        while True:  # the body, counted as it arrives
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees the disconnect
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await _too_large(send, received, self.max_bytes, declared=False)
                return
            if not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay() -> Message:
            for message in pending:
                return message
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the bytes are counted instead
    return None


async def _too_large(send: Send, size: int, limit: int, *, declared: bool) -> None:
    what = f"the request body is {size} bytes" if declared else f"the request body passed {limit} bytes (at least {size} received)"
    detail = {"loc": ["body"], "msg": f"{what}; the limit is {limit} bytes (max_body_bytes)", "type": "body_too_large", "value": size, "limit": limit, "limit_name": "max_body_bytes"}
    body = orjson.dumps({"detail": [detail]})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
