"""Request heads are bounded: oversized headers get 431, a slow drip of headers is cut off.

`python -m api serve` (what make run, the README and the Dockerfile start) refuses an oversized
head while reading it and closes a connection that takes too long to send one; the app itself
answers 431 under any other server (the contract's bare `uvicorn api.main:app`).
"""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.resilience.served import Served, free_port, serve

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    argv = [sys.executable, "-m", "api", "serve", "--port", str(free_port())]
    env = {"DATABASE_URL": database_url, "HEADER_TIMEOUT_S": "1"}
    with serve(argv, tmp_path / "out.log", **env) as server:
        yield server


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_oversized_header_is_431_before_it_is_read_whole(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /v1/drugs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        sent = 0
        # Up to 50 MB, as the attack did: the answer comes long before the end.
        try:
            while sent < 50 * 1024 * 1024:
                sock.sendall(b"a" * 4096)
                sent += 4096
        except OSError:
            pass  # the server answered and closed while we were still sending
        try:
            answer = _read_all(sock)
        except ConnectionResetError:
            answer = b""
    assert sent < 50 * 1024 * 1024, "the server read a 50 MB header"
    if answer:  # the reset may overtake the answer; when it arrives it is a 431 problem
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert PROBLEM_JSON.encode() in answer
    # Just over the cap, sent at once: the 431 arrives.
    response = httpx.get(f"{served.base}/v1/drugs", headers={"X-Padding": "a" * 30_000}, timeout=20)
    assert response.status_code == 431
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 431
    # The server is still there.
    assert httpx.get(f"{served.base}/healthz", timeout=20).status_code == 200


def test_a_head_past_the_cap_gets_431_before_it_ends(served: Served) -> None:
    # The head never ends, so the app never sees it: the answer comes from the server's reader,
    # well within HEADER_TIMEOUT_S (after which it would close without one).
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET /v1/drugs HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        for _ in range(20):  # up to 80 KiB in separate writes, the cap is 16 + 8 KiB
            if select.select([sock], [], [], 0.02)[0]:
                break  # answered: stop writing, so that it is not reset away unread
            sock.sendall(b"a" * 4096)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert PROBLEM_JSON.encode() in answer
    assert answer.endswith(b'"detail": "The request line and headers are too large"}')


def test_a_slow_header_drip_is_cut_off(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        dripped = 0
        closed = False
        # 60 s of drip at most; the server allows HEADER_TIMEOUT_S=1 for the whole head.
        while dripped < 300 and not closed:
            try:
                sock.sendall(b"X-Drip: a\r\n")
            except OSError:
                closed = True
                break
            dripped += 1
            sock.settimeout(0.2)
            try:
                closed = sock.recv(1024) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
        assert closed, "the server kept waiting for the rest of the head"


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert sock.recv(1024) == b""  # closed by the server, not by our timeout


def test_the_app_answers_431_under_any_server(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/drugs", headers={**tokens.admin(), "X-Padding": "a" * 20_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == PROBLEM_JSON
    assert client.get("/v1/drugs", headers={**tokens.admin(), "X-Padding": "a" * 10_000}).is_success


def test_many_small_headers_add_up_to_431(client: TestClient) -> None:
    headers = [(f"X-Part-{i}", "a" * 1000) for i in range(20)]
    assert client.get("/healthz", headers=headers).status_code == 431
