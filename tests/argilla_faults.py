"""FAULT INJECTOR for the Argilla client: an httpx transport that performs a request on the real
server and then reports a timeout to the client, as a loaded server does when it finishes the work
after the client gave up. It exists only to produce that fault on demand; every reply it lets
through comes from the real Argilla server.
"""

from __future__ import annotations

import re

import httpx


class LostReplyTransport(httpx.BaseTransport):
    """Forwards every request to `inner`; the first `times` requests matching `method` and the
    `path` pattern are performed but answered with `httpx.ReadTimeout`."""

    def __init__(self, inner: httpx.BaseTransport, method: str, path: str, *, times: int = 1):
        self.inner, self.method, self.path = inner, method, re.compile(path)
        self.left = times
        self.lost: list[tuple[str, str, int]] = []  # (method, path, status the client never saw)
        self.lost_requests: list[tuple[str, str, bytes]] = []
        self.sent: list[tuple[str, str, bytes]] = []  # (method, path, body) of every request

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, request.read()))
        response = self.inner.handle_request(request)
        if self.left and request.method == self.method and self.path.fullmatch(request.url.path):
            self.left -= 1
            response.read()
            response.close()
            self.lost.append((request.method, request.url.path, response.status_code))
            self.lost_requests.append(self.sent[-1])
            raise httpx.ReadTimeout("fault injected: the server did the work, the reply was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()
