"""`python -m api serve`: uvicorn with the limits a deployment must not forget on its command line.

- no uvicorn access log (it prints concrete paths and query strings: patient ids, tokens);
  the app writes its own line with the route template (api/middleware.py);
- the request head (request line and headers) is read with httptools and capped: an oversized
  head is refused with 431 as soon as it passes the cap, instead of being read whole;
- a client must finish sending the head within HEADER_TIMEOUT_S (slow header drips), and a new
  connection that sends nothing is closed after the same time;
- no `server` header;
- with several workers on Linux, each worker listens on a socket of its own (SO_REUSEPORT), so
  that a burst of new connections is spread over the workers instead of landing on one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from api.errors import PROBLEM_JSON
from api.settings import get_settings

# Room for the request line (path and query string) on top of the headers' own cap.
REQUEST_LINE_ROOM = 8 * 1024

_BODY_431 = json.dumps(
    {
        "type": "about:blank",
        "title": "Request header fields too large",
        "status": 431,
        "detail": "The request line and headers are too large",
    }
).encode()
ANSWER_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    + f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(_BODY_431)}\r\n".encode()
    + b"connection: close\r\n\r\n"
    + _BODY_431
)

logger = logging.getLogger("uvicorn.error")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol: 431 for an oversized head, and a deadline to receive it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._head_timeout = settings.header_timeout_s
        self._head_cap = settings.max_header_bytes + REQUEST_LINE_ROOM
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0
        self._head_began_in_chunk = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a new connection must send a head in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._head_began_in_chunk = False
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # The parser tells when a head begins and ends, not where in a chunk. A chunk in which
        # a head began may also hold the end of the body before it, so it is not counted: the
        # head is refused at most one chunk later, and a head that arrives whole in one chunk is
        # the app's to refuse (api/middleware.py).
        if not self._head_began_in_chunk:
            self._head_bytes += len(data)
        if self._head_bytes > self._head_cap:
            self._disarm()
            self.transport.write(ANSWER_431)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_began_in_chunk = True
        if self._head_timer is None:
            self._arm()  # the first bytes of a new request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class ListeningAddress(socket.socket):
    """A socket bound with SO_REUSEPORT, which each worker process binds again for itself.

    uvicorn's workers share one listening socket, and a worker that wakes up accepts every
    connection waiting (asyncio and uvloop accept in a loop), so a burst of new connections (a
    proxy's pool opening, a load test) lands on one worker while the other stays idle. Sockets of
    their own in one SO_REUSEPORT group give each worker its share: Linux spreads new connections
    over the group's listening sockets by a hash of their addresses. The supervisor's socket holds
    the port but never listens, so it never gets a connection. uvicorn pickles the sockets it
    hands to each worker it starts or restarts; this one unpickles as a new bind of its address.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind_reuse_port, (self.family, self.getsockname()))


def bind_reuse_port(family: int, address: tuple[Any, ...]) -> ListeningAddress:
    sock = ListeningAddress(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def serve(host: str, port: int, workers: int, proxy_headers: bool) -> int:
    get_settings()  # refuses to start here, with its reason, rather than per worker
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "http": BoundedHttpToolsProtocol,
        "access_log": False,
        "server_header": False,
        "proxy_headers": proxy_headers,
        "timeout_keep_alive": 5,
    }
    if workers < 2 or sys.platform != "linux":  # elsewhere SO_REUSEPORT does not spread
        uvicorn.run("api.main:app", **options)
        return 0
    config = uvicorn.Config("api.main:app", **options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = bind_reuse_port(family, (host, port))
    except OSError as exc:
        logger.error(exc)
        return STARTUP_FAILURE
    logger.info(
        "Uvicorn running on http://%s:%d, a listening socket for each of %d workers "
        "(Press CTRL+C to quit)",
        f"[{host}]" if family == socket.AF_INET6 else host,
        sock.getsockname()[1],
        workers,
    )
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
    return 0
