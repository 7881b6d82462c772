"""`python -m api serve`: uvicorn with the limits a deployment must not forget on its command line.

- no uvicorn access log (it prints concrete paths and query strings: patient ids, tokens);
  the app writes its own line with the route template (api/middleware.py);
- the request head (request line and headers) is read with h11 and capped: an oversized head is
  refused with 431 as soon as it passes the cap, instead of being read whole;
- a client must finish sending the head within HEADER_TIMEOUT_S (slow header drips), and a new
  connection that sends nothing is closed after the same time;
- no `server` header.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import PROBLEM_JSON
from api.settings import get_settings

# Room for the request line (path and query string) on top of the headers' own cap.
REQUEST_LINE_ROOM = 8 * 1024
REASON_431 = b"Request Header Fields Too Large"
DEFAULT_HEAD_CAP = 16 * 1024  # h11's own default


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a 431 for an oversized head and a deadline to receive it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = get_settings().header_timeout_s
        self._head_cap = self.config.h11_max_incomplete_event_size or DEFAULT_HEAD_CAP
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        pending, _ = self.conn.trailing_data
        if len(pending) <= self._head_cap:
            super().send_400_response(msg)
            return
        self._disarm()
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request header fields too large",
                "status": 431,
                "detail": "The request line and headers are too large",
            }
        ).encode()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=431, headers=headers, reason=REASON_431),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def serve(host: str, port: int, workers: int, proxy_headers: bool) -> int:
    settings = get_settings()  # refuses to start here, with its reason, rather than per worker
    uvicorn.run(
        "api.main:app",
        host=host,
        port=port,
        workers=workers,
        http=BoundedH11Protocol,
        h11_max_incomplete_event_size=settings.max_header_bytes + REQUEST_LINE_ROOM,
        access_log=False,
        server_header=False,
        proxy_headers=proxy_headers,
        timeout_keep_alive=5,
    )
    return 0
