"""The service as an operator starts it: a real process from a documented command line."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ROOT, TEST_SECRET

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def makefile_run_command() -> list[str]:
    """The command `make run` ends with, its make variables filled in."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    line = [ln.strip() for ln in recipe.splitlines() if ln.startswith("\t") and "@" not in ln][-1]
    line = line.replace("$(PY)", sys.executable).replace("$(HOST)", "127.0.0.1")
    return shlex.split(line.replace("$(PORT)", "8000"))


def readme_production_command() -> list[str]:
    """The serve command of the README's "Deploying on PostgreSQL" section."""
    section = (ROOT / "README.md").read_text().split("## Deploying on PostgreSQL", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    line = next(ln for ln in block.splitlines() if re.match(r"(python -m api serve|uvicorn)", ln))
    return shlex.split(line.split("#", 1)[0])


def local_command(argv: list[str], port: int) -> list[str]:
    """A documented command with its program resolved in this virtualenv, on 127.0.0.1:port."""
    argv = list(argv)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif not os.path.isabs(argv[0]):
        argv[0] = str(BIN / argv[0])
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    return argv


@dataclass
class Served:
    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(argv: list[str], log: Path, **env: str) -> Iterator[Served]:
    """Run ``argv`` (which must listen where its --port says) until the block ends."""
    port = argv[argv.index("--port") + 1]
    environ = {
        **os.environ,
        "APP_ENV": "production",
        "JWT_SECRET": TEST_SECRET,
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    environ.pop("TEST_DATABASE_URL", None)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{argv} did not come up: {log.read_text()}"
            time.sleep(0.1)
        yield Served(base, log, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
