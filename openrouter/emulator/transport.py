"""In-process httpx transports: no sockets, no threads; the fastest way to point a client at the emulator."""

from __future__ import annotations

import asyncio
import time

import httpx


def _ask(emu, request: httpx.Request):
    return emu.handle(
        request.method,
        request.url.path,
        request.url.query.decode("ascii", "replace"),
        request.headers.get("authorization"),
    )


class EmulatorTransport(httpx.BaseTransport):
    """httpx.Client(transport=emu.transport(), base_url="http://emulator/api/v1")"""

    def __init__(self, emu):
        self.emu = emu

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        reply = _ask(self.emu, request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.hang:
            # What a client sees when the server never answers within its timeout.
            raise httpx.ReadTimeout("emulator: injected hang", request=request)
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body, request=request)


class AsyncEmulatorTransport(httpx.AsyncBaseTransport):
    def __init__(self, emu):
        self.emu = emu

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        reply = _ask(self.emu, request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.hang:
            raise httpx.ReadTimeout("emulator: injected hang", request=request)
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body, request=request)
