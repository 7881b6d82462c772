"""A real uvicorn server in a background thread, for tests that need truly concurrent requests.

The TestClient runs requests one at a time through a portal; concurrency bugs (two episodes for
one rule, two winners of a resolve race) only show with parallel HTTP requests on separate
database connections. The listening socket is bound before the server thread starts, so requests
queue in the kernel's backlog until uvicorn accepts them: no waiting loop is needed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from api.main import create_app
from tests.conftest import make_settings


@contextlib.contextmanager
def live_server(database_url: str, **settings: Any) -> Iterator[str]:
    """Serve a fresh app on ``database_url`` at 127.0.0.1:<free port>; yields the base URL."""
    app = create_app(make_settings(database_url, **settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the live server did not stop"
