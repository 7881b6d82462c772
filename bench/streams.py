"""Do open live-feed streams slow report ingest? One run, both sides of the comparison.

    .venv/bin/python bench/streams.py [--streams 500] [--seconds 10] [--clients 16]
        [--workers 1] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_streams]

Starts uvicorn (api.main:app, WORKER_MODE=inline) on a fresh database (a temporary SQLite file
unless --database-url names a PostgreSQL server database, which is created and dropped), makes
patients, then measures report ingest for --seconds with --clients concurrent clients three
times: with no stream, with --streams streams of a clinician open on the same worker, and with
none again. One report in five (--dangerous) raises an emergency, so the streams have events
to carry; the script counts the events the streams received. Other processes on the machine
share its cores: compare the ratios within one run, not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.security import mint_token  # noqa: E402
from api.settings import Settings  # noqa: E402

SECRET = "bench-streams-" + "x" * 40
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def token(**claims: object) -> dict[str, str]:
    settings = Settings(_env_file=None, jwt_secret=SECRET)  # type: ignore[call-arg]
    return {"Authorization": f"Bearer {mint_token(settings, **claims)}"}  # type: ignore[arg-type]


def report(dangerous: bool) -> dict[str, object]:
    at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    body: dict[str, object] = {
        "client_report_id": str(uuid.uuid4()),
        "recorded_at": at,
        "symptoms": [{"code": "fatigue", "grade": random.randint(0, 1)}],
    }
    if dangerous:
        body["vitals"] = {"spo2": 88}
    return body


async def ingest(
    base: str, patients: list[str], clients: int, seconds: float, dangerous: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one_client(i: int) -> None:
            nonlocal errors
            n = 0
            while time.monotonic() < stop:
                patient = patients[(i + n * clients) % len(patients)]
                n += 1
                started = time.monotonic()
                response = await client.post(
                    f"/v1/patients/{patient}/reports",
                    json=report(dangerous=random.random() < dangerous),
                    headers=token(sub=f"user-{patient}", role="patient", patient_id=patient),
                )
                if response.status_code == 201:
                    latencies.append(time.monotonic() - started)
                else:
                    errors += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "reports_per_s": len(latencies) / seconds,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


class Streams:
    def __init__(self, base: str, n: int) -> None:
        self.base = base
        self.n = n
        self.connected = 0
        self.events = 0
        self.failed = 0
        self.tasks: list[asyncio.Task[None]] = []
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        self.client = httpx.AsyncClient(
            base_url=base, timeout=httpx.Timeout(30, read=None), limits=limits
        )

    async def one(self) -> None:
        headers = token(sub="bench-nurse", role="clinician", teams=["onc-a"])
        try:
            async with self.client.stream("GET", "/v1/alerts/stream", headers=headers) as r:
                if r.status_code != 200:
                    self.failed += 1
                    return
                self.connected += 1
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        self.events += 1
        except (httpx.HTTPError, asyncio.CancelledError):
            pass

    async def open(self) -> None:
        self.tasks = [asyncio.create_task(self.one()) for _ in range(self.n)]
        deadline = time.monotonic() + 60
        while self.connected + self.failed < self.n and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


def stream_process(base: str, n: int, conn: Connection) -> None:
    """The streams live in a process of their own: reading 500 streams must not take the CPU
    of the ingest clients' event loop, or the figure would measure this script."""

    async def main() -> None:
        streams = Streams(base, n)
        await streams.open()
        conn.send((streams.connected, streams.failed))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        conn.send(streams.events)
        await streams.close()

    asyncio.run(main())


async def run(base: str, args: argparse.Namespace) -> None:
    admin = token(sub="bench-admin", role="admin")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        patients = []
        for _ in range(args.patients):
            response = await client.post("/v1/patients", json={"care_team": "onc-a"}, headers=admin)
            response.raise_for_status()
            patients.append(response.json()["id"])

    async def measure() -> dict[str, float]:
        return await ingest(base, patients, args.clients, args.seconds, args.dangerous)

    await ingest(base, patients, args.clients, 2, args.dangerous)  # warm up
    rows = [("no stream", await measure(), None)]
    mine, theirs = multiprocessing.Pipe()
    reader = multiprocessing.Process(target=stream_process, args=(base, args.streams, theirs))
    reader.start()
    connected, failed = await asyncio.get_running_loop().run_in_executor(None, mine.recv)
    result = await measure()
    await asyncio.sleep(2)  # the last events reach the streams
    mine.send("stop")
    events = mine.recv()
    reader.join(timeout=30)
    note = f"{connected} open ({failed} refused), {events} events received"
    rows.append((f"{args.streams} streams", result, note))
    rows.append(("no stream again", await measure(), None))

    base_rate = rows[0][1]["reports_per_s"]
    print(
        f"\n{args.clients} clients, {args.seconds:g} s each, {args.workers} uvicorn worker(s), "
        f"{args.dangerous:.0%} of reports raise an alert"
    )
    print(f"{'run':<18} {'reports/s':>10} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, r, note in rows:
        ratio = r["reports_per_s"] / base_rate if base_rate else 0
        print(
            f"{name:<18} {r['reports_per_s']:>10.1f} {ratio:>6.2f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['errors']:>6.0f}" + (f"   {note}" if note else "")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--dangerous", type=float, default=0.2, help="share of reports that raise an alert"
    )
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{tmp.name}/bench-streams.db"
    server_url = None
    if url.startswith("postgresql"):
        server_url = make_url(url).set(database="postgres")
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = make_url(url).database
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": SECRET, "APP_ENV": "production"}
    subprocess.run([str(BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log = Path(tmp.name) / "uvicorn.log"
    cmd = [str(BIN / "uvicorn"), "api.main:app", "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--timeout-graceful-shutdown", "3"]
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print(log.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        print(f"database: {make_url(url).get_backend_name()}")
        asyncio.run(run(base, args))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if server_url is not None:
            with admin.connect() as conn:
                conn.execute(
                    text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
                )
            admin.dispose()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
