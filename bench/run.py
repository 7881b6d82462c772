"""Load benchmark of the service as production runs it (issue 6).

    .venv/bin/python bench/run.py [--sizes 10k,100k,1M] [--db postgres,sqlite] [--workers 1,2]
                                  [--duration 10s] [--connections 64] [--ingest-connections 256]
                                  [--against REV[,REV]] [--rounds N]

For each database and size: a fresh database (PostgreSQL: CREATE DATABASE bench_<random> on the
server; SQLite: a temp file), `alembic upgrade head`, a bulk seed (bench/seed.py: COPY on
PostgreSQL, Core executemany on SQLite), then for each worker count the service on it as its
Dockerfile starts it (`python -m api serve`: uvicorn, with its listening socket per worker and its
bounded request heads), and wrk driving the workloads (Lua scripts bench/reports.lua and
bench/get.lua). The same wrk script and bodies against bench/echo.py under plain uvicorn with the
same workers give the echo bound;
bench/baseline_app.py (report ingest as FastAPI's SQL tutorial writes it) on a database of its own,
driven like ingest, gives the tutorial baseline. Each run also measures the CPU time of the server
processes and of the PostgreSQL backends serving its database, per request (CpuMeter).
With --against, the service of each git revision (a worktree) runs in turn with this checkout's on
copies of the same seed, for --rounds rounds, and the runs are listed side by side; with
--rounds, the tutorial baseline runs at the start of every round. The databases of a size are
all seeded before the runs, which then take turns between them, round by round.
Prints one table, and writes it (JSON and markdown) with the raw wrk output and the server logs to
bench/results/<date>/. Servers, databases and temp files are removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH)]

import httpx  # noqa: E402
import seed as seeding  # noqa: E402

PY = sys.executable
PG_ADMIN_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
SERVICE = "api.main:app"
WORKLOADS = ("floor", "alerts", "alerts-deep", "history", "ingest", "batch")
# Read workloads run first, on the database as seeded; the writes (ingest adds ~1k reports/s,
# batch far more) come after them.
DEEP_ITEMS = 5000  # how deep into the alert queue the deep-page cursor points
INGEST_PATIENTS = 1000  # distinct patients (and tokens) the write workloads spread over
BATCH = 100
# wrk gets one thread (-t1): on 2 cores the server needs the rest. Measured on the 2-core
# machine against the echo app (uvloop + httptools, 64 connections, the ingest script): one wrk
# thread drove 18-32k requests/s using 45-65 % of one core, and -t2 gave no more with 2 workers
# (21k vs 21-24k: the cores were full, a second wrk thread only takes CPU from the server). The
# service itself answers far fewer requests, where wrk needs a few % of a core ("wrk cpu" column:
# wrk's CPU time / the run's duration; 100 % = one core).
WRK_THREADS = 1


# --- small helpers -------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_size(value: str) -> int:
    v = value.strip().lower()
    if v in SIZES:
        return SIZES[v]
    mult = {"k": 1_000, "m": 1_000_000}.get(v[-1:], 1)
    return int(float(v.rstrip("km")) * mult)


def size_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def parse_seconds(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", value)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 10s, 1m)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class Cleanup:
    """Undo actions, run last-in first-out on exit, on error and on Ctrl-C/SIGTERM."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        entry = (what, action)
        self._actions.append(entry)

        def run_now() -> None:
            if entry in self._actions:
                self._actions.remove(entry)
                action()

        return run_now

    def run_all(self) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:
                print(f"cleanup of {what} failed: {exc}", file=sys.stderr)


# --- wrk -----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise SystemExit("wrk is not installed and apt-get is not available: install wrk first")
    if os.geteuid() != 0:
        raise SystemExit(
            "wrk is not installed; installing it needs root: run `sudo apt-get install -y wrk` "
            "(or run this script as root once)"
        )
    log("wrk is missing: apt-get update && apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed:\n{done.stdout[-2000:]}{done.stderr}")
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get install -y wrk ran but wrk is still not on PATH")
    return found


# --- processes -----------------------------------------------------------------------------


def _proc_cpu_seconds(session: int) -> float:
    """CPU time (user + system) of every live process in a session (a server and its workers)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after "comm)": state ppid pgrp session ... utime(12) stime(13)
        if int(fields[3]) == session:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_POLL_S = 0.25  # how often CpuMeter samples while wrk runs


def _proc_stat(pid: int) -> tuple[int, int, int, int, int] | None:
    """(session, start time, utime + stime, cutime + cstime, ppid) of a live process, CPU in
    clock ticks; None if it is gone. cutime + cstime: the children it has reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after "comm)": state(0) ppid(1) pgrp session(3) ... utime(11) stime(12) cutime(13)
    # cstime(14) ... starttime(19)
    return (
        int(fields[3]),
        int(fields[19]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
        int(fields[1]),
    )


def _is_postgres(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().startswith(b"postgres")
    except OSError:
        return False


def _session_pids(session: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None and st[0] == session:
                pids.append(int(entry.name))
    return pids


@dataclass
class CpuUsage:
    api_s: float  # CPU seconds of the server's processes over the measured interval
    api_by_process: tuple[float, ...]  # the same, each process, the busiest first
    db_s: float | None  # of the PostgreSQL backends serving its database; None: not measured
    db_by_type: dict[str, float] = field(default_factory=dict)  # backend_type -> seconds, seen
    db_unseen_s: float = 0.0  # exited backends never sampled (the postmaster's reaped CPU)
    db_backends: int = 0  # distinct backends of the database seen
    db_exited: int = 0  # of which gone before the end
    other_exited: int = 0  # backends of other databases that exited during the run
    note: str = ""


SERVING = ("client backend", "parallel worker")


class CpuMeter:
    """User + system CPU time of a server and of the PostgreSQL backends serving it, between
    start() and stop(), from /proc/<pid>/stat (see "How CPU is measured" in bench/README.md).

    The server: every process of its session (uvicorn runs in a session of its own; the master
    and its workers are all in it). The database: the backends pg_stat_activity lists for the
    benchmark database (client backends and parallel workers; autovacuum is reported apart),
    looked up on a connection to the admin database (not counted). Sampled every CPU_POLL_S
    while wrk runs, per process (pid and start time), from its value at start() (0 if it started
    later) to its last sample. Backends that exit during the run (pool overflow connections
    closed on check-in) are reaped by the postmaster, whose cutime + cstime then grows by their
    whole CPU time: that growth, less what the samples already hold for the exited backends we
    saw (of any database), is the CPU of backends that lived between two samples, or of the tail
    of one after its last sample; it is counted for the benchmark database (on a server that
    serves nothing else, nobody else's backends come and go).
    """

    def __init__(self, session: int, pg: tuple[str, str] | None = None) -> None:
        self.session = session
        self.pg = pg  # (admin url, database name)
        self._base: dict[tuple[int, int], int] = {}
        self._last: dict[tuple[int, int], int] = {}
        self._kind: dict[tuple[int, int], str] = {}
        self._api_pids: list[int] = []
        self._conn: Any = None
        self._postmaster: int | None = None
        self._reaped0 = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._note = ""

    def _sample(self, pid: int, kind: str, first: bool) -> None:
        st = _proc_stat(pid)
        if st is None:
            return
        key = (pid, st[1])
        if key not in self._kind and kind != "api" and not _is_postgres(pid):
            return  # pg_stat_activity's pid is not a process here (another host, container)
        if first:
            self._base.setdefault(key, st[2])
        self._last[key] = st[2]
        self._kind.setdefault(key, kind)

    def _backends(self) -> list[tuple[int, str]]:
        if self._conn is None:
            return []
        try:
            rows = self._conn.execute(
                "SELECT pid, datname, backend_type FROM pg_stat_activity"
                " WHERE datname IS NOT NULL AND pid <> pg_backend_pid()"
            ).fetchall()
        except Exception as exc:
            self._note = f"pg_stat_activity: {exc}"
            return []
        out = []
        for pid, datname, kind in rows:
            prefix = "db:" if datname == self.pg[1] else "other:"  # type: ignore[index]
            out.append((int(pid), prefix + str(kind)))
        return out

    def _poll(self, first: bool = False) -> None:
        for pid in self._api_pids:
            self._sample(pid, "api", first)
        for pid, kind in self._backends():
            self._sample(pid, kind, first)

    def _loop(self) -> None:
        while not self._stop.wait(CPU_POLL_S):
            self._poll()

    def _reaped(self) -> int:
        st = _proc_stat(self._postmaster) if self._postmaster else None
        return st[3] if st is not None else 0

    def start(self) -> None:
        self._api_pids = _session_pids(self.session)
        if self.pg is not None:
            try:
                import psycopg

                self._conn = psycopg.connect(pg_dsn(self.pg[0]), autocommit=True, connect_timeout=5)
                own = self._conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                st = _proc_stat(int(own))
                if st is not None and _is_postgres(int(own)) and _is_postgres(st[4]):
                    self._postmaster = st[4]
                    self._reaped0 = self._reaped()
            except Exception as exc:
                self._note = f"no database CPU: {exc}"
        self._poll(first=True)
        self._thread = threading.Thread(target=self._loop, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self) -> CpuUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._api_pids = _session_pids(self.session)  # a worker started during the run too
        self._poll()
        reaped = self._reaped() - self._reaped0
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        exited = {k for k in self._last if (_proc_stat(k[0]) or (0, -1))[1] != k[1]}
        by_kind: dict[str, float] = {}
        for key, last in self._last.items():
            kind = self._kind[key]
            by_kind[kind] = by_kind.get(kind, 0.0) + (last - self._base.get(key, 0)) / CLK_TCK
        db_keys = [k for k in self._last if self._kind[k].startswith("db:")]
        db_by_type = {k[3:]: v for k, v in by_kind.items() if k.startswith("db:")}
        unseen = 0.0
        if self._postmaster is not None:
            seen_exited = sum(self._last[k] for k in exited if self._kind[k] != "api")
            unseen = max(0, reaped - seen_exited) / CLK_TCK
        other_exited = len([k for k in exited if self._kind[k].startswith("other:")])
        db_s: float | None = None
        if self.pg is not None and self._conn is not None:
            db_s = sum(v for k, v in db_by_type.items() if k in SERVING) + unseen
            if not db_keys:
                # no backend of the database readable in /proc: another host or container
                db_s = None
                self._note = self._note or "no backend of the database found in /proc"
            elif self._postmaster is None:
                self._note = "postmaster not found: backends exiting between samples missed"
        api = [
            (last - self._base.get(key, 0)) / CLK_TCK
            for key, last in self._last.items()
            if self._kind[key] == "api"
        ]
        return CpuUsage(
            api_s=by_kind.get("api", 0.0),
            api_by_process=tuple(sorted(api, reverse=True)),
            db_s=db_s,
            db_by_type={k: round(v, 3) for k, v in db_by_type.items()},
            db_unseen_s=round(unseen, 3),
            db_backends=len(db_keys),
            db_exited=len([k for k in db_keys if k in exited]),
            other_exited=other_exited,
            note=self._note,
        )


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        cpu = [float(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + cpu[4]
    return sum(cpu), idle


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    workers: int
    idle_ms: float = 0.0  # median keep-alive request time on the idle server
    pg: tuple[str, str] | None = None  # (admin url, database name) whose backends serve it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return _proc_cpu_seconds(self.proc.pid)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def drain(self, offset: int, sent: int, limit: float = 30.0) -> float:
        """Let the requests still running when wrk stopped finish (the client is gone, the
        server is not), so that their outcome counts for this run and their load not for the
        next: until the app logged as many requests as were sent since ``offset``, or the
        server is quiet (no request finished, < 5 % of a core for 1 s), at most ``limit`` s."""
        started = time.monotonic()
        quiet, size = 0, self.log_size()
        while time.monotonic() - started < limit and self.proc.poll() is None:
            if self.log_since(offset).count('{"event": "request"') >= sent:
                break
            before = self.cpu_seconds()
            time.sleep(0.5)
            grown, size = self.log_size() != size, self.log_size()
            quiet = 0 if grown or self.cpu_seconds() - before >= 0.025 else quiet + 1
            if quiet >= 2:
                break
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # the workers too, should the master have died first
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def start_server(
    app: str,
    env: dict[str, str],
    workers: int,
    log_path: Path,
    cwd: Path,
    cleanup: Cleanup,
    app_dir: Path | None = None,
    ready_path: str = "/readyz",
    health_path: str = "/healthz",
) -> tuple[Server, Callable[[], None]]:
    """The service as production runs it (``python -m api serve``, the Dockerfile's command),
    any other app under plain uvicorn; returns once /readyz answers and every worker started."""
    port = free_port()
    if app == SERVICE:
        cmd = [PY, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers)]
    else:
        cmd = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers), "--no-access-log", "--no-server-header"]
    if app_dir is not None:
        cmd += ["--app-dir", str(app_dir)]
    out = open(log_path, "ab")  # noqa: SIM115 (closed with the server)
    # The log holds earlier rounds' servers too: only this one's workers count as started.
    begun = out.tell()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = Server(proc, port, log_path, workers)

    def stop() -> None:
        server.stop()
        out.close()

    stop_now = cleanup.push(f"server {app} :{port}", stop)
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=2) as client:
        while True:
            if proc.poll() is not None:
                stop_now()
                raise SystemExit(f"{app} exited at start:\n{log_path.read_text()[-3000:]}")
            started = server.log_since(begun).count("Application startup complete")
            try:
                ok = client.get(server.url + ready_path).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and started >= workers:
                server.idle_ms = idle_latency_ms(server.url + health_path)
                if server.idle_ms > 20:
                    log(
                        f"  NOTE: a keep-alive request to the idle {app} takes "
                        f"{server.idle_ms:.0f} ms: Nagle's algorithm is on (uvicorn --workers N "
                        "does not set TCP_NODELAY, uvicorn issue #3149), each response waits "
                        "for the client's delayed ACK"
                    )
                return server, stop_now
            if time.monotonic() > deadline:
                stop_now()
                raise SystemExit(f"{app} not ready in 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)


def idle_latency_ms(url: str, n: int = 21) -> float:
    """Median time of sequential requests on one keep-alive connection to an idle server."""
    times = []
    with httpx.Client(timeout=5) as client:
        client.get(url)
        for _ in range(n):
            started = time.perf_counter()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[n // 2]


@dataclass
class WrkResult:
    command: str
    raw: str
    data: dict[str, Any]
    wrk_cpu: float  # CPU seconds of wrk / wall seconds
    server_cpu: float  # same for the server processes
    machine_busy: float  # share of all cores busy during the run (anything on the machine)
    cpu: CpuUsage  # CPU seconds of the server and its database backends during the run


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    script_args: list[str],
    connections: int,
    duration: int,
    timeout: int,
    server: Server,
) -> WrkResult:
    cmd = [wrk, "-t", str(min(WRK_THREADS, connections)), "-c", str(connections)]
    cmd += ["-d", f"{duration}s", "--timeout", f"{timeout}s", "--latency", "-s", str(script)]
    cmd += [url, "--", *script_args]
    meter = CpuMeter(server.proc.pid, server.pg)
    meter.start()
    total0, idle0 = _machine_busy()
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            meter.stop()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        cpu = meter.stop()
        out.seek(0)
        raw = out.read().decode(errors="replace")
    total1, idle1 = _machine_busy()
    srv = cpu.api_s / wall
    busy = 1 - (idle1 - idle0) / max(total1 - total0, 1)
    line = next((x for x in raw.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({' '.join(cmd)}):\n{raw[-3000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    # wrk calls request() once before the run to check the script (script_verify_request)
    data["sent"] = max(0, data.get("sent", 0) - 1)
    wrk_cpu = (usage.ru_utime + usage.ru_stime) / wall
    return WrkResult(" ".join(cmd), raw, data, wrk_cpu, srv, busy, cpu)


# --- databases -----------------------------------------------------------------------------


@dataclass
class Database:
    kind: str  # postgres | sqlite
    url: str
    drop: Callable[[], None]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[1]


def create_postgres(
    admin_url: str, cleanup: Cleanup, template: str | None = None, prefix: str = "bench"
) -> Database:
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn(admin_url), autocommit=True) as conn:
        if template:
            # FILE_COPY: a checkpoint and a file copy, much faster than WAL_LOG for a big database
            strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(pg_dsn(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop_now = cleanup.push(f"database {name}", drop)
    return Database("postgres", with_database(admin_url, name), drop_now)


def create_sqlite(
    workdir: Path, cleanup: Cleanup, template: Path | None = None, prefix: str = "bench"
) -> Database:
    path = workdir / f"{prefix}_{secrets.token_hex(6)}.db"
    if template is not None:
        shutil.copyfile(template, path)

    def drop() -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    drop_now = cleanup.push(f"database {path}", drop)
    return Database("sqlite", f"sqlite:///{path}", drop_now)


def service_env(database_url: str, secret: str, root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        APP_ENV="production",
        JWT_SECRET=secret,
        # The seeded open alerts are old: a job loop would escalate them during the runs.
        WORKER_MODE="off",
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])),
    )
    return env


def migrate(database_url: str, secret: str, cwd: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        env=service_env(database_url, secret),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"alembic upgrade head failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started


# --- workloads -----------------------------------------------------------------------------


@dataclass
class Row:
    db: str
    workers: int
    size: str
    workload: str
    connections: int
    rps: float
    reports_per_s: float | None
    p50_ms: float | None  # None: no answer at all in the run
    p99_ms: float | None
    errors: int
    ratio: float | None = None
    wrk_cpu: float = 0.0
    server_cpu: float = 0.0
    machine_busy: float = 0.0
    cpu_api_ms: float | None = None  # server CPU time / requests completed (wrk's count)
    cpu_db_ms: float | None = None  # PostgreSQL backends' CPU time / requests; None: SQLite
    baseline_ratio: float | None = None  # rps / the tutorial baseline's rps (ingest rows)
    # The busiest server process's share of the server's CPU (2+ workers): near 1/workers when
    # wrk's connections fell evenly on the workers, near 100 % when one worker took them all.
    top_worker: float | None = None
    code: str = ""  # the code served, when runs alternate revisions (--against)
    detail: dict[str, Any] = field(default_factory=dict)


def row_from(
    db: str,
    workers: int,
    size: str,
    workload: str,
    connections: int,
    result: WrkResult,
    timeout: int,
) -> Row:
    d = result.data
    seconds = d["duration_us"] / 1e6
    rps = d["requests"] / seconds
    socket_errors = d["connect"] + d["read"] + d["write"] + d["timeout"]
    # wrk counts a timeout only when the late answer arrives within the run; requests still
    # unanswered at the end are not counted. When the run lasted longer than the timeout and
    # its throughput says they had waited longer than that (Little's law: connections / rps >
    # timeout), they count too.
    unanswered = max(0, d.get("sent", 0) - d.get("responses", 0))
    slow = rps == 0 or connections / rps > timeout
    stalled = unanswered if seconds >= timeout and slow else 0
    errors = d["unexpected"] + socket_errors + stalled
    reports = None
    if workload.startswith("batch"):
        reports = d.get("created", 0) / seconds
        errors += d.get("rejected", 0) + d.get("duplicate", 0)
    detail = {k: v for k, v in d.items() if k not in ("sample",)}
    detail["unanswered_at_end"] = unanswered
    detail["stalled"] = stalled
    if d.get("sample"):
        detail["error_sample"] = d["sample"]
    if workload.startswith("ingest") and d["responses"]:
        detail["alert_share"] = round(d.get("advised", 0) / d["responses"], 3)
    cpu = result.cpu
    detail["cpu"] = {
        "api_s": round(cpu.api_s, 3),
        "api_by_process_s": [round(seconds, 3) for seconds in cpu.api_by_process],
        "db_s": None if cpu.db_s is None else round(cpu.db_s, 3),
        "db_by_backend_type_s": cpu.db_by_type,
        "db_exited_unseen_s": cpu.db_unseen_s,
        "db_backends": cpu.db_backends,
        "db_backends_exited": cpu.db_exited,
        "other_databases_backends_exited": cpu.other_exited,
    }
    if cpu.note:
        detail["cpu"]["note"] = cpu.note
    done = d["requests"]
    cpu_api = cpu.api_s * 1000 / done if done else None
    cpu_db = cpu.db_s * 1000 / done if done and cpu.db_s is not None else None
    top = cpu.api_by_process[0] / cpu.api_s if workers > 1 and cpu.api_s > 0 else None
    return Row(
        db,
        workers,
        size,
        workload,
        connections,
        rps,
        reports,
        d["p50_us"] / 1000 if d["requests"] else None,
        d["p99_us"] / 1000 if d["requests"] else None,
        errors,
        wrk_cpu=result.wrk_cpu,
        server_cpu=result.server_cpu,
        machine_busy=result.machine_busy,
        cpu_api_ms=cpu_api,
        cpu_db_ms=cpu_db,
        top_worker=top,
        detail=detail,
    )


def server_log_findings(text: str) -> dict[str, Any]:
    """Statuses by route from the app's JSON access log, and its warnings and errors."""
    statuses: dict[str, int] = {}
    problems: list[str] = []
    for line in text.splitlines():
        if line.startswith('{"event": "request"'):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry["status"] >= 400:
                    key = f"{entry['status']} {entry['method']} {entry['route']}"
                    statuses[key] = statuses.get(key, 0) + 1
        elif line.strip() and not line.startswith("INFO:"):
            problems.append(line.strip())
    locked = sum("database is locked" in p for p in problems)
    # the app logs "database unavailable: OperationalError" and answers 503; on SQLite that is
    # "database is locked" (the busy timeout ran out) or a pool timeout
    unavailable = sum("database unavailable" in p for p in problems)
    return {
        "non_2xx": statuses,
        "log_lines": problems[:20],
        "database_locked": locked,
        "db_unavailable": unavailable,
    }


def write_patients_file(
    path: Path, patients: list[seeding.PatientInfo], tokens: dict[uuid.UUID, str]
) -> None:
    with open(path, "w") as f:
        for p in patients:
            weight = "" if p.weight is None else f"{p.weight}"
            fields = [str(p.id), tokens[p.id], ",".join(p.codes), ",".join(p.serious)]
            f.write("\t".join([*fields, ",".join(p.vitals), weight]) + "\n")


def deep_cursor(base: str, token: str) -> tuple[str | None, int]:
    """Follow the alert queue DEEP_ITEMS items down; the cursor there and the depth reached."""
    cursor, depth = None, 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        while depth < DEEP_ITEMS:
            params: dict[str, Any] = {"limit": min(200, DEEP_ITEMS - depth)}
            if cursor:
                params["cursor"] = cursor
            r = client.get("/v1/alerts", params=params)
            r.raise_for_status()
            page = r.json()
            if not page["next_cursor"]:
                break
            cursor, depth = page["next_cursor"], depth + len(page["items"])
    return cursor, depth


def check_samples(base: str, patient: seeding.PatientInfo, token: str, clinician: str) -> None:
    """One request of each kind by hand before the load: the setup must be right."""
    now = datetime.now(UTC)
    body = {
        "client_report_id": str(uuid.uuid4()),
        "recorded_at": now.isoformat(),
        "symptoms": [{"code": (patient.codes + patient.serious)[0], "grade": 0}],
    }
    with httpx.Client(base_url=base, timeout=30) as client:
        pat = {"Authorization": f"Bearer {token}"}
        r = client.post(f"/v1/patients/{patient.id}/reports", json=body, headers=pat)
        if r.status_code != 201:
            raise SystemExit(f"sample report: {r.status_code} {r.text[:500]}")
        r = client.get("/v1/alerts", headers={"Authorization": f"Bearer {clinician}"})
        if r.status_code != 200 or not r.json()["items"]:
            raise SystemExit(f"sample alert queue: {r.status_code} {r.text[:500]}")


@dataclass
class Code:
    """The service's code a run serves: this checkout, or a revision beside it (--against)."""

    label: str
    root: Path


@dataclass
class Config:
    wrk: str
    duration: int
    timeout: int
    connections: list[int]
    ingest_connections: list[int]
    workloads: list[str]
    results: Path
    workdir: Path
    pg_admin: str = PG_ADMIN_DEFAULT  # where pg_stat_activity is read for the backends' CPU


def run_service(
    cfg: Config,
    cleanup: Cleanup,
    db: Database,
    secret: str,
    seeded: seeding.SeedResult,
    workers: int,
    size: str,
    echo: dict[tuple[int, int], float],
    baseline: dict[tuple[str, int, int], Row],
    rows: list[Row],
    code: Code | None = None,
) -> None:
    """Serve the seeded database with ``workers`` workers, run the workloads, add to ``rows``."""
    from api.security import mint_token
    from api.settings import Settings

    code = code or Code("", ROOT)
    tag = f"{db.kind}-w{workers}-{size}" + (f"-{code.label}" if code.label else "")
    settings = Settings(
        _env_file=None, app_env="production", jwt_secret=secret, database_url=db.url
    )  # type: ignore[call-arg]
    env = service_env(db.url, secret, code.root)
    # The seed (or its copy) written out first: the run's first fsync, a WAL checkpoint's on
    # SQLite, would otherwise wait for gigabytes of the seed's dirty pages. PostgreSQL's own
    # buffers go first (a copy made with FILE_COPY has had its checkpoint already).
    synced = time.monotonic()
    if db.kind == "postgres":
        import psycopg

        with psycopg.connect(pg_dsn(cfg.pg_admin), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    os.sync()
    log(f"{tag}: sync {time.monotonic() - synced:.1f} s")
    log(f"{tag}: starting python -m api serve --workers {workers} from {code.root}")
    server, stop = start_server(
        SERVICE, env, workers, cfg.results / f"server-{tag}.log", cfg.workdir, cleanup
    )
    if db.kind == "postgres":
        server.pg = (cfg.pg_admin, db.name)
    try:
        team = seeded.heavy.team
        clinician = mint_token(settings, sub=f"nurse-{team}", role="clinician", teams=[team])
        pool = [p for p in seeded.patients if p is not seeded.heavy][:INGEST_PATIENTS]
        tokens = {
            p.id: mint_token(settings, sub=f"patient-{p.id}", role="patient", patient_id=p.id)
            for p in [*pool, seeded.heavy]
        }
        patients_file = cfg.workdir / f"patients-{tag}.tsv"
        write_patients_file(patients_file, pool, tokens)
        clinician_file = cfg.workdir / f"clinician-{tag}.txt"
        clinician_file.write_text(clinician + "\n")
        heavy_file = cfg.workdir / f"heavy-{tag}.txt"
        heavy_file.write_text(tokens[seeded.heavy.id] + "\n")
        check_samples(server.url, pool[0], tokens[pool[0].id], clinician)

        plan: list[tuple[str, int, Path, list[str]]] = []
        conns = cfg.connections
        if "floor" in cfg.workloads:
            for c in conns:
                plan.append(("floor", c, BENCH / "get.lua", [str(clinician_file), "/healthz"]))
        if "alerts" in cfg.workloads:
            for c in conns:
                plan.append(("alerts", c, BENCH / "get.lua", [str(clinician_file), "/v1/alerts"]))
        if "alerts-deep" in cfg.workloads:
            cursor, depth = deep_cursor(server.url, clinician)
            if cursor is None:
                log(f"{tag}: the alert queue has no second page; skipping alerts-deep")
            else:
                path = f"/v1/alerts?cursor={cursor}"
                for c in conns:
                    plan.append(
                        (f"alerts-deep@{depth}", c, BENCH / "get.lua", [str(clinician_file), path])
                    )
        if "history" in cfg.workloads:
            path = f"/v1/patients/{seeded.heavy.id}/reports"
            for c in conns:
                plan.append(("history", c, BENCH / "get.lua", [str(heavy_file), path]))
        if "ingest" in cfg.workloads:
            for c in sorted(set(conns) | set(cfg.ingest_connections)):
                plan.append(("ingest", c, BENCH / "reports.lua", [str(patients_file), "single"]))
        if "batch" in cfg.workloads:
            for c in conns:
                plan.append(("batch", c, BENCH / "reports.lua", [str(patients_file), "batch"]))

        for workload, c, script, args in plan:
            if script.name == "reports.lua":
                expect = "201" if args[1] == "single" else "200"
                # the server runs on this machine: its clock is this clock
                args = [*args, expect, str(int(time.time())), secrets.token_hex(4), str(BATCH)]
            else:
                args = [*args, "200"]
            offset = server.log_size()
            result = run_wrk(
                cfg.wrk, server.url, script, args, c, cfg.duration, cfg.timeout, server
            )
            drained = server.drain(offset, result.data.get("sent", 0))
            name = f"{tag}-{workload.split('@')[0]}-c{c}"
            (cfg.results / f"wrk-{name}.txt").write_text(f"$ {result.command}\n{result.raw}")
            row = row_from(db.kind, workers, size, workload, c, result, cfg.timeout)
            row.code = code.label
            e = echo.get((workers, c))
            if e:
                row.ratio = (row.reports_per_s or row.rps) / e
            base = baseline.get((db.kind, workers, c))
            if workload == "ingest" and base is not None and base.rps:
                row.baseline_ratio = row.rps / base.rps
            findings = server_log_findings(server.log_since(offset))
            row.detail["server"] = findings
            row.detail["idle_ms"] = round(server.idle_ms, 2)
            row.detail["drain_s"] = round(drained, 1)
            rows.append(row)
            print_row(row)
            if server.proc.poll() is not None:
                raise SystemExit(f"the server died during {workload}; see {server.log_path}")
    finally:
        stop()


def run_echo(
    cfg: Config,
    cleanup: Cleanup,
    workers: int,
    conns: list[int],
    patients_file: Path,
    rows: list[Row],
) -> None:
    env = dict(os.environ)
    server, stop = start_server(
        "echo:app",
        env,
        workers,
        cfg.results / f"server-echo-w{workers}.log",
        cfg.workdir,
        cleanup,
        app_dir=BENCH,
        ready_path="/",
        health_path="/",
    )
    try:
        for c in conns:
            args = [str(patients_file), "single", "200", str(int(time.time()))]
            args += [secrets.token_hex(4), str(BATCH)]
            result = run_wrk(
                cfg.wrk,
                server.url,
                BENCH / "reports.lua",
                args,
                c,
                cfg.duration,
                cfg.timeout,
                server,
            )
            (cfg.results / f"wrk-echo-w{workers}-c{c}.txt").write_text(
                f"$ {result.command}\n{result.raw}"
            )
            row = row_from("-", workers, "-", "echo", c, result, cfg.timeout)
            row.ratio = 1.0
            row.detail["idle_ms"] = round(server.idle_ms, 2)
            rows.append(row)
            print_row(row)
    finally:
        stop()


def check_baseline(base: str, patients_file: Path) -> None:
    """One report by hand before the load, as reports.lua's baseline mode sends it."""
    fields = patients_file.read_text().splitlines()[0].split("\t")
    body = {
        "patient_id": fields[0],
        "client_report_id": str(uuid.uuid4()),
        "recorded_at": datetime.now(UTC).isoformat(),
        "symptoms": [{"code": fields[2].split(",")[0], "grade": 0}],
    }
    r = httpx.post(base + "/reports", json=body, timeout=30)
    if r.status_code != 200 or len(r.json().get("symptoms", [])) != 1:
        raise SystemExit(f"sample baseline report: {r.status_code} {r.text[:500]}")


def run_baseline(
    cfg: Config,
    cleanup: Cleanup,
    kind: str,
    workers: int,
    conns: list[int],
    patients_file: Path,
    echo: dict[tuple[int, int], float],
    baseline: dict[tuple[str, int, int], Row],
    rows: list[Row],
) -> None:
    """The tutorial baseline (bench/baseline_app.py) on a fresh database of its own, driven like
    ingest (reports.lua, baseline mode) at ``conns``; rows to ``rows`` and ``baseline``."""
    if kind == "postgres":
        db = create_postgres(cfg.pg_admin, cleanup, prefix="bench_baseline")
    else:
        db = create_sqlite(cfg.workdir, cleanup, prefix="bench_baseline")
    try:
        env = {**os.environ, "DATABASE_URL": db.url}
        # the tables, once: two workers running create_all at once could race on CREATE TABLE
        done = subprocess.run(
            [PY, str(BENCH / "baseline_app.py")],
            env=env,
            cwd=cfg.workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"baseline_app.py (create_all) failed:\n{done.stdout}{done.stderr}")
        tag = f"baseline-{kind}-w{workers}"
        server, stop = start_server(
            "baseline_app:app",
            env,
            workers,
            cfg.results / f"server-{tag}.log",
            cfg.workdir,
            cleanup,
            app_dir=BENCH,
            ready_path="/docs",
            health_path="/docs",
        )
        if kind == "postgres":
            server.pg = (cfg.pg_admin, db.name)
        try:
            check_baseline(server.url, patients_file)
            for c in conns:
                args = [str(patients_file), "baseline", "200", str(int(time.time()))]
                args += [secrets.token_hex(4), str(BATCH)]
                offset = server.log_size()
                result = run_wrk(
                    cfg.wrk,
                    server.url,
                    BENCH / "reports.lua",
                    args,
                    c,
                    cfg.duration,
                    cfg.timeout,
                    server,
                )
                drained = server.drain(offset, result.data.get("sent", 0))
                (cfg.results / f"wrk-{tag}-c{c}.txt").write_text(
                    f"$ {result.command}\n{result.raw}"
                )
                row = row_from(kind, workers, "-", "baseline", c, result, cfg.timeout)
                e = echo.get((workers, c))
                if e:
                    row.ratio = row.rps / e
                row.baseline_ratio = 1.0
                row.detail["server"] = server_log_findings(server.log_since(offset))
                row.detail["idle_ms"] = round(server.idle_ms, 2)
                row.detail["drain_s"] = round(drained, 1)
                rows.append(row)
                baseline[(kind, workers, c)] = row
                print_row(row)
                if server.proc.poll() is not None:
                    raise SystemExit(f"the baseline died; see {server.log_path}")
        finally:
            stop()
    finally:
        db.drop()


# --- output --------------------------------------------------------------------------------

COLUMNS = (
    ("db", "{}"),
    ("workers", "{}"),
    ("size", "{}"),
    ("workload", "{}"),
    ("conns", "{}"),
    ("rps", "{:,.0f}"),
    ("reports/s", "{:,.0f}"),
    ("p50 ms", "{:.1f}"),
    ("p99 ms", "{:.1f}"),
    ("api cpu ms/req", "{:.2f}"),
    ("db cpu ms/req", "{:.2f}"),
    ("errors", "{}"),
    ("x echo", "{:.1%}"),
    ("x baseline", "{:.1%}"),
    ("srv cpu", "{:.0%}"),
    ("top worker", "{:.0%}"),
    ("wrk cpu", "{:.0%}"),
)


def cells(row: Row) -> list[str]:
    values = [
        row.db,
        row.workers,
        row.size,
        f"{row.workload} [{row.code}]" if row.code else row.workload,
        row.connections,
        row.rps,
        row.reports_per_s if row.reports_per_s is not None else row.rps,
        row.p50_ms,
        row.p99_ms,
        row.cpu_api_ms,
        row.cpu_db_ms,
        row.errors,
        row.ratio,
        row.baseline_ratio,
        row.server_cpu,
        row.top_worker,
        row.wrk_cpu,
    ]
    out = []
    for (_, fmt), v in zip(COLUMNS, values, strict=True):
        out.append("-" if v is None else fmt.format(v))
    if not row.workload.startswith(("ingest", "batch", "echo", "baseline")):
        out[6] = "-"
    return out


def error_summary(row: Row) -> str:
    d = row.detail
    parts = []
    for key, label in (
        ("unexpected", "unexpected status"),
        ("timeout", "wrk timeouts (> --timeout)"),
        ("stalled", "unanswered at the end (waiting > --timeout)"),
        ("connect", "connect errors"),
        ("read", "read errors"),
        ("write", "write errors"),
        ("rejected", "batch items rejected"),
        ("duplicate", "batch items duplicate"),
    ):
        if d.get(key):
            parts.append(f"{d[key]} {label}")
    text = ", ".join(parts)
    if d.get("error_sample"):
        text += f"; first: {d['error_sample'][:300]}"
    server = d.get("server") or {}
    if server.get("non_2xx"):
        text += f"; server log: {server['non_2xx']}"
    if server.get("database_locked"):
        text += f"; 'database is locked' x{server['database_locked']}"
    if server.get("db_unavailable"):
        text += f"; 'database unavailable' (503) x{server['db_unavailable']}"
    if server.get("log_lines"):
        text += f"; server log: {server['log_lines'][0][:200]}"
    return text


def baseline_lines(rows: list[Row]) -> list[str]:
    """Each ingest run against the latest tutorial baseline run before it at the same database,
    workers and connections."""
    base: dict[tuple[str, int, int], Row] = {}

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def times(a: float | None, b: float | None) -> str:
        return f" (x{a / b:.2f})" if a is not None and b else ""

    lines = []
    for r in rows:
        if r.workload == "baseline":
            base[(r.db, r.workers, r.connections)] = r
        b = base.get((r.db, r.workers, r.connections))
        if r.workload != "ingest" or b is None:
            continue
        line = (
            f"{r.db} w{r.workers} {r.size} c{r.connections}: {r.rps:,.0f} vs {b.rps:,.0f} rps"
            f" ({'-' if r.baseline_ratio is None else f'{r.baseline_ratio:.1%}'}); cpu ms/req"
            f" api {ms(r.cpu_api_ms)} vs {ms(b.cpu_api_ms)}{times(r.cpu_api_ms, b.cpu_api_ms)}"
        )
        if r.cpu_db_ms is not None or b.cpu_db_ms is not None:
            line += f", db {ms(r.cpu_db_ms)} vs {ms(b.cpu_db_ms)}{times(r.cpu_db_ms, b.cpu_db_ms)}"
        if b.errors:
            line += f"; baseline errors {b.errors}"
        lines.append(line)
    return lines


# A run whose busiest worker did this share of the server's work or more, of 2 workers, measured
# one worker's writer more than the service (see "wrk's connections on the workers").
LOPSIDED = 0.75


def lopsided_lines(rows: list[Row]) -> list[str]:
    return [
        f"{r.db} w{r.workers} {r.size} {r.workload} c{r.connections}: one worker did "
        f"{r.top_worker:.0%} of the server's work; its rps understate what the workers can do"
        for r in rows
        if r.top_worker is not None and r.top_worker >= LOPSIDED
    ]


def print_row(row: Row) -> None:
    c = cells(row)
    extra = f"  ERRORS: {error_summary(row)}" if row.errors else ""
    log(
        f"  {c[3]:<18} c={c[4]:<4} rps={c[5]:>8} reports/s={c[6]:>8} p50={c[7]:>7}ms "
        f"p99={c[8]:>8}ms cpu/req={c[9]}+{c[10]}ms errors={c[11]} echo={c[12]} "
        f"baseline={c[13]} srv={c[14]} top={c[15]} wrk={c[16]}"
        + (f" drain={row.detail['drain_s']}s" if row.detail.get("drain_s", 0) > 1 else "")
        + extra
    )


def table(rows: list[Row], markdown: bool) -> str:
    head = [name for name, _ in COLUMNS]
    body = [cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*head), sep, *(fmt.format(*r) for r in body)])


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def codes_to_run(against: list[str], workdir: Path, cleanup: Cleanup) -> list[Code]:
    """This checkout, then each revision of --against in a git worktree of its own (removed on
    exit). The seed is made by this checkout's migrations, so a revision must have the same."""
    if not against:
        return [Code("", ROOT)]
    dirty = "+" if git("status", "--porcelain", "--untracked-files=no") else ""
    codes = [Code(git("rev-parse", "--short", "HEAD") + dirty, ROOT)]
    for rev in against:
        sha = git("rev-parse", "--short", f"{rev}^{{commit}}")
        if subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", sha, "--", "migrations"]
        ).returncode:
            raise SystemExit(f"--against {rev}: its migrations differ from this checkout's")
        path = workdir / f"code-{sha}"
        git("worktree", "add", "--detach", str(path), sha)
        cleanup.push(
            f"worktree {path}", lambda p=path: git("worktree", "remove", "--force", str(p))
        )
        codes.append(Code(sha, path))
    return codes


def compare_lines(rows: list[Row]) -> list[str]:
    """With --against: each run's figures side by side, per code, in the order they ran."""
    groups: dict[tuple[str, int, str, str, int], dict[str, list[Row]]] = {}
    for r in rows:
        if r.code:
            key = (r.db, r.workers, r.size, r.workload, r.connections)
            groups.setdefault(key, {}).setdefault(r.code, []).append(r)
    lines = []
    for (db, workers, size, workload, conns), by_code in groups.items():
        first = None
        parts = []
        for label, runs in by_code.items():
            rates = [r.reports_per_s if r.reports_per_s is not None else r.rps for r in runs]
            mean = sum(rates) / len(rates)
            first = first or mean
            p99 = "/".join("-" if r.p99_ms is None else f"{r.p99_ms:.0f}" for r in runs)
            cpu = "/".join("-" if r.cpu_api_ms is None else f"{r.cpu_api_ms:.2f}" for r in runs)
            parts.append(
                f"{label} {'/'.join(f'{x:,.0f}' for x in rates)} (mean {mean:,.0f}, "
                f"x{mean / first:.2f}), p99 {p99} ms, api cpu {cpu} ms"
            )
        lines.append(f"{db} w{workers} {size} {workload} c{conns}: " + "; ".join(parts))
    return lines


def machine_info(admin_url: str | None, wrk: str | None) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        import importlib.util

        import uvicorn

        # uvicorn picks uvloop and httptools when they are installed (uvicorn[standard])
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        info["uvicorn"] = f"{uvicorn.__version__} ({loop}, {http})"
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
        info["wrk"] = (out.stdout or out.stderr).splitlines()[0] if out.stdout or out.stderr else ""
    if admin_url:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(pg_dsn(admin_url), connect_timeout=5) as conn:
                info["postgresql"] = conn.execute("SELECT version()").fetchone()[0]  # type: ignore[index]
    return info


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k,1M", help="reports seeded (default 10k,100k,1M)")
    ap.add_argument("--db", default="postgres,sqlite", help="postgres,sqlite (default both)")
    ap.add_argument("--workers", default="1,2", help="uvicorn worker counts (default 1,2)")
    ap.add_argument("--duration", default="10s", type=parse_seconds, help="per wrk run (10s)")
    ap.add_argument("--timeout", default="5s", type=parse_seconds, help="wrk request timeout")
    ap.add_argument("--connections", default="64", help="connections for every workload (64)")
    ap.add_argument(
        "--ingest-connections", default="256", help="extra connection counts for ingest (256)"
    )
    ap.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}"
    )
    ap.add_argument("--no-echo", action="store_true", help="skip the echo bound")
    ap.add_argument(
        "--no-baseline", action="store_true", help="skip the tutorial baseline (baseline_app.py)"
    )
    ap.add_argument("--seed-only", action="store_true", help="only create, migrate, seed, time")
    ap.add_argument(
        "--against",
        default="",
        help="git revisions whose service runs in turn with this checkout's, each on a copy\n"
        "of the same seed (A/B on one machine, whose speed drifts within the hour)",
    )
    ap.add_argument(
        "--rounds",
        default=1,
        type=int,
        help="runs of each server, each on a copy of the seed (with --against: in turns,\n"
        "each round in the other order); the tutorial baseline runs at the start of each round",
    )
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", PG_ADMIN_DEFAULT),
        help="PostgreSQL server (its database is used for CREATE/DROP DATABASE)",
    )
    ap.add_argument("--results", default=str(BENCH / "results"), help="output directory root")
    args = ap.parse_args(argv)

    sizes = [parse_size(s) for s in parse_list(args.sizes)]
    dbs = [d.lower().replace("postgresql", "postgres") for d in parse_list(args.db)]
    if unknown := set(dbs) - {"postgres", "sqlite"}:
        ap.error(f"unknown --db {sorted(unknown)}")
    workers_list = [int(w) for w in parse_list(args.workers)]
    conns = [int(c) for c in parse_list(args.connections)]
    ingest_conns = [int(c) for c in parse_list(args.ingest_connections)]
    workloads = parse_list(args.workloads)
    if args.rounds < 1:
        ap.error("--rounds must be 1 or more")
    if unknown := set(workloads) - set(WORKLOADS):
        ap.error(f"unknown --workloads {sorted(unknown)}")

    wrk = None if args.seed_only else ensure_wrk()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = Path(args.results) / stamp
    results.mkdir(parents=True, exist_ok=True)
    cleanup = Cleanup()

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # explicit: a background job of a non-interactive shell inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cleanup.push(f"temp dir {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    info = machine_info(args.pg_url if "postgres" in dbs else None, wrk)
    try:
        codes = codes_to_run(parse_list(args.against), workdir, cleanup)
    except BaseException:
        cleanup.run_all()
        raise
    runs_per_server = 0
    for w in workloads:
        runs_per_server += len(set(conns) | set(ingest_conns)) if w == "ingest" else len(conns)
    all_conns = sorted(set(conns) | (set(ingest_conns) if "ingest" in workloads else set()))
    total_runs = (
        len(dbs) * len(sizes) * len(workers_list) * args.rounds * len(codes) * runs_per_server
    )
    if not args.no_echo:
        total_runs += len(workers_list) * len(all_conns)
    # the baseline is what ingest is compared with: once per database and worker count, and
    # with --rounds once a round and size
    with_baseline = not args.no_baseline and "ingest" in workloads
    baseline_conns = sorted(set(conns) | set(ingest_conns))
    if with_baseline:
        baseline_runs = len(sizes) * args.rounds if args.rounds > 1 else 1
        total_runs += len(dbs) * baseline_runs * len(workers_list) * len(baseline_conns)
    log(f"results: {results}")
    log(
        f"machine: {info['nproc']} cpu ({info['cpu']}), {info['memory']}, "
        f"load {info['load_average_at_start'][0]:.2f}; {info.get('postgresql', '')[:40]}; "
        f"uvicorn {info.get('uvicorn', '?')}"
    )
    if not args.seed_only:
        log(
            f"{total_runs} wrk runs of {args.duration}s: at least "
            f"{timedelta(seconds=total_runs * (args.duration + 1))} plus seeding"
        )

    cfg = Config(
        wrk or "",
        args.duration,
        args.timeout,
        conns,
        ingest_conns,
        workloads,
        results,
        workdir,
        args.pg_url,
    )
    rows: list[Row] = []
    seeds: list[dict[str, Any]] = []
    echo: dict[tuple[int, int], float] = {}
    baseline: dict[tuple[str, int, int], Row] = {}
    baseline_done: set[str] = set()
    interrupted = False
    try:
        for n in sizes:
            size = size_label(n)
            # Every database of a size is seeded first, then the rounds run with the databases
            # taking turns (each round in the other order), so that the machine's drift favours
            # neither when they are compared.
            seeded_dbs: dict[str, tuple[Database, seeding.SeedResult, str]] = {}
            for kind in dbs:
                secret = secrets.token_urlsafe(48)
                if kind == "postgres":
                    template = create_postgres(args.pg_url, cleanup)
                else:
                    template = create_sqlite(workdir, cleanup)
                log(f"{kind} {size}: alembic upgrade head")
                t_migrate = migrate(template.url, secret, workdir)
                log(f"{kind} {size}: seeding {n:,} reports")
                seeded = seeding.seed(template.url, n)
                counts = ", ".join(f"{k} {v:,}" for k, v in seeded.counts.items())
                log(f"{kind} {size}: seeded in {seeded.seconds:.1f} s ({counts})")
                seeds.append(
                    {
                        "db": kind,
                        "size": size,
                        "migrate_s": round(t_migrate, 1),
                        "seed_s": round(seeded.seconds, 1),
                        "rows": seeded.counts,
                    }
                )
                if args.seed_only:
                    template.drop()
                    continue
                seeded_dbs[kind] = (template, seeded, secret)
                if not args.no_echo and not echo:
                    # the echo bound, once per worker count and connection count, with the
                    # patients (tokens, paths, bodies) of the first seeded database
                    from api.security import mint_token
                    from api.settings import Settings

                    s = Settings(_env_file=None, app_env="production", jwt_secret=secret)  # type: ignore[call-arg]
                    pool = seeded.patients[1 : INGEST_PATIENTS + 1]
                    toks = {
                        p.id: mint_token(s, sub="x", role="patient", patient_id=p.id) for p in pool
                    }
                    echo_file = workdir / "patients-echo.tsv"
                    write_patients_file(echo_file, pool, toks)
                    for w in workers_list:
                        log(f"echo bound: uvicorn echo:app --workers {w}")
                        run_echo(cfg, cleanup, w, all_conns, echo_file, rows)
                        for r in rows:
                            if r.workload == "echo":
                                echo[(r.workers, r.connections)] = r.rps
                baseline_file = workdir / f"patients-baseline-{kind}.tsv"
                if with_baseline and not baseline_file.exists():
                    # the tutorial baseline is driven like ingest with the patients (ids, symptom
                    # codes, tokens) of this database
                    from api.security import mint_token
                    from api.settings import Settings

                    s = Settings(_env_file=None, app_env="production", jwt_secret=secret)  # type: ignore[call-arg]
                    pool = [p for p in seeded.patients if p is not seeded.heavy][:INGEST_PATIENTS]
                    toks = {
                        p.id: mint_token(s, sub=f"patient-{p.id}", role="patient", patient_id=p.id)
                        for p in pool
                    }
                    write_patients_file(baseline_file, pool, toks)
            # each round runs the codes (and the databases) in the other order, so drift
            # favours none of them
            turns = [
                (r, kind, code, workers)
                for r in range(args.rounds)
                for kind in (list(seeded_dbs) if r % 2 == 0 else list(seeded_dbs)[::-1])
                for code in (codes if r % 2 == 0 else codes[::-1])
                for workers in workers_list
            ]
            for i, (r, kind, code, workers) in enumerate(turns):
                template, seeded, secret = seeded_dbs[kind]
                baseline_file = workdir / f"patients-baseline-{kind}.tsv"
                # The baseline once per database; with --rounds at the start of each database's
                # turn in every round, so that each run's ratio is to a baseline run beside it.
                first_of_turn = i == 0 or turns[i - 1][:2] != (r, kind)
                if (
                    with_baseline
                    and first_of_turn
                    and (args.rounds > 1 or kind not in baseline_done)
                ):
                    baseline_done.add(kind)
                    for w in workers_list:
                        log(f"{kind} tutorial baseline: uvicorn baseline_app:app --workers {w}")
                        run_baseline(
                            cfg,
                            cleanup,
                            kind,
                            w,
                            baseline_conns,
                            baseline_file,
                            echo,
                            baseline,
                            rows,
                        )
                if all(t[1] != kind for t in turns[i + 1 :]):
                    db = template  # the database's last run: on the seed itself, not a copy
                elif kind == "postgres":
                    db = create_postgres(args.pg_url, cleanup, template.url.rsplit("/", 1)[1])
                else:
                    db = create_sqlite(workdir, cleanup, Path(template.url[len("sqlite:///") :]))
                try:
                    run_service(
                        cfg,
                        cleanup,
                        db,
                        secret,
                        seeded,
                        workers,
                        size,
                        echo,
                        baseline,
                        rows,
                        code if len(codes) > 1 else None,
                    )
                finally:
                    db.drop()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: cleaning up")
    finally:
        cleanup.run_all()

    report = {"machine": info, "seeds": seeds, "rows": [r.__dict__ for r in rows]}
    (results / "results.json").write_text(json.dumps(report, indent=2, default=str))
    seed_lines = [
        f"- {s['db']} {s['size']}: migrate {s['migrate_s']} s, seed {s['seed_s']} s" for s in seeds
    ]
    md = [
        f"# Benchmark {info['date']}",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']}, kernel "
        f"{info['kernel']}; {info.get('postgresql', 'PostgreSQL not used')}; SQLite "
        f"{info['sqlite']}; uvicorn {info.get('uvicorn', '?')}; {info.get('wrk', '')}; "
        "load average at start "
        f"{info['load_average_at_start'][0]:.2f}.",
        f"wrk -t{WRK_THREADS}, {args.duration} s per run, --timeout {args.timeout}s.",
        "",
        *seed_lines,
        "",
        table(rows, markdown=True) if rows else "(no load runs)",
        "",
    ]
    versus = baseline_lines(rows)
    if versus:
        md += ["Ingest against the tutorial baseline (service vs baseline):", ""]
        md += [f"- {line}" for line in versus] + [""]
    compared = compare_lines(rows)
    if compared:
        md += ["Codes side by side (reports/s of each run, in the order they ran):", ""]
        md += [f"- {line}" for line in compared] + [""]
    lopsided = lopsided_lines(rows)
    if lopsided:
        md += ["Runs where wrk's connections fell mostly on one worker:", ""]
        md += [f"- {line}" for line in lopsided] + [""]
    idle: dict[str, float] = {}
    for r in rows:
        label = f"echo w{r.workers}" if r.workload == "echo" else f"{r.db} w{r.workers} {r.size}"
        idle.setdefault(label, r.detail.get("idle_ms", 0.0))
    if idle:
        md.append(
            "Keep-alive request time on the idle server (ms; ~40 means Nagle's algorithm is on): "
            + ", ".join(f"{k} {v:.1f}" for k, v in idle.items())
        )
        md.append("")
    (results / "results.md").write_text("\n".join(md))
    print()
    print("\n".join(seed_lines))
    if rows:
        print()
        print(table(rows, markdown=False))
        if versus:
            print("\ningest against the tutorial baseline (service vs baseline):")
            print("\n".join(f"  {line}" for line in versus))
        if compared:
            print("\ncodes side by side (reports/s of each run, in the order they ran):")
            print("\n".join(f"  {line}" for line in compared))
        if lopsided:
            print("\nruns where wrk's connections fell mostly on one worker:")
            print("\n".join(f"  {line}" for line in lopsided))
        failures = [r for r in rows if r.errors]
        if failures:
            print()
        for r in failures:
            print(
                f"{r.db} w{r.workers} {r.size} {r.workload} c{r.connections}: "
                f"{r.errors} errors: {error_summary(r)}"
            )
    print(f"\nwritten: {results}/results.md, results.json, wrk-*.txt, server-*.log")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
