"""Helpers for the notification tests: uvicorn and `python -m api worker` as real processes, a
webhook receiver, and a Server-Sent Events reader."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, TEST_SECRET
from tests.resilience.served import serve

BIN = Path(sys.executable).parent
# Short enough for "within 2 s" deadlines, on both databases.
FAST = {
    "WORKER_INTERVAL_S": "0.2",
    "STREAM_POLL_S": "0.3",
    "STREAM_HEARTBEAT_S": "0.5",
    "WEBHOOK_RETRY_BASE_S": "0.2",
    "WEBHOOK_RETRY_MAX_S": "0.5",
    "WEBHOOK_TIMEOUT_S": "2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def _env(database_url: str, settings: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **FAST, **settings}
    env.update({"DATABASE_URL": database_url, "JWT_SECRET": TEST_SECRET, "APP_ENV": "development"})
    env.pop("TEST_DATABASE_URL", None)
    return env


@contextlib.contextmanager
def uvicorn(database_url: str, tmp_path: Path, workers: int = 2, **settings: str) -> Iterator[str]:
    """`uvicorn api.main:app --workers N` on a free port; yields its base URL."""
    port = free_port()
    cmd = [str(BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers), "--timeout-graceful-shutdown", "5"]
    with serve(cmd, tmp_path / f"uvicorn-{port}.log", **_env(database_url, settings)) as served:
        yield served.base


@contextlib.contextmanager
def worker(database_url: str, tmp_path: Path, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m api worker` until the block ends (stopped with SIGTERM, as an operator would)."""
    log = tmp_path / f"worker-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "worker"],
            cwd=ROOT,
            env=_env(database_url, settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: process.poll() is not None or b"worker_started" in log.read_bytes(),
            60,
            "the worker to start",
        )
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        assert code == 0, (code, log.read_text())


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: records every POST, answers from ``answers`` (then 204)."""

    port: int = field(default_factory=free_port)
    answers: list[int] = field(default_factory=list)
    received: list[Delivery] = field(default_factory=list)
    delay: float = 0.0  # seconds before each answer
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(
                    Delivery({k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = receiver.answers.pop(0) if receiver.answers else 204
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [d.headers["webhook-id"] for d in self.received]


@dataclass
class Stream:
    """GET /v1/alerts/stream read in a thread: events and heartbeat comments as they come."""

    base: str
    headers: dict[str, str]
    events: list[dict[str, str]] = field(default_factory=list)
    comments: int = 0
    status: int | None = None
    _response: httpx.Response | None = None
    _client: httpx.Client | None = None

    def open(self) -> Stream:
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        ready = threading.Event()

        def read() -> None:
            assert self._client is not None
            try:
                with self._client.stream(
                    "GET", f"{self.base}/v1/alerts/stream", headers=self.headers
                ) as response:
                    self._response = response
                    self.status = response.status_code
                    ready.set()
                    if response.status_code != 200:
                        response.read()
                        return
                    current: dict[str, str] = {}
                    for line in response.iter_lines():
                        if line.startswith(":"):
                            self.comments += 1
                        elif line == "":
                            if current:
                                self.events.append(current)
                            current = {}
                        else:
                            key, _, value = line.partition(":")
                            current[key] = value.removeprefix(" ")
            except (httpx.HTTPError, RuntimeError, ValueError):
                pass
            finally:
                ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(10), "the stream did not answer"
        return self

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Stream:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
