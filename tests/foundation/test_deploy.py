"""The deployment path as an operator runs it: the Dockerfile's own commands, in processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, TEST_SECRET, fresh_database

BIN = Path(sys.executable).parent


def _dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{instruction}\b.*?(\[.*\])\s*$", text, re.MULTILINE)
    assert match, instruction
    return json.loads(match.group(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_migrate_then_serve_with_the_dockerfile_commands(tmp_path: Path) -> None:
    with fresh_database(tmp_path) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "APP_ENV": "production",
            "JWT_SECRET": TEST_SECRET,
        }
        env.pop("TEST_DATABASE_URL", None)
        subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=env, check=True, timeout=120
        )

        port = _free_port()
        cmd = _dockerfile_json("CMD")
        assert cmd[:2] == ["uvicorn", "api.main:app"]
        cmd = [str(BIN / cmd[0]), *cmd[1:]]
        cmd[cmd.index("--host") + 1] = "127.0.0.1"
        cmd[cmd.index("--port") + 1] = str(port)
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "uvicorn did not come up"
                time.sleep(0.1)

            healthcheck = _dockerfile_json("HEALTHCHECK")
            healthcheck = [
                sys.executable if healthcheck[0] == "python" else healthcheck[0],
                *healthcheck[1:],
            ]
            healthcheck[-1] = healthcheck[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            assert subprocess.run(healthcheck, timeout=10).returncode == 0

            token = subprocess.run(
                [sys.executable, "-m", "api", "token", "--role", "clinician", "--team", "onc-a"],
                cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=30,
            ).stdout.strip()  # fmt: skip
            response = httpx.get(
                f"{base}/v1/drugs/aldesleukin", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200
            drug = response.json()
            assert drug["side_effects"] and {"cls-weight", "fever"} <= {
                r["id"] for r in drug["rules"]
            }
            assert "server" not in response.headers
            assert httpx.get(f"{base}/docs").status_code == 200
        finally:
            server.terminate()
            server.wait(timeout=30)
