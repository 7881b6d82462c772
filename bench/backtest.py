"""Rule backtest at scale: time and peak memory of POST /v1/rules/backtest over N stored reports.

    .venv/bin/python bench/backtest.py [--reports 100k] [--db postgres,sqlite]

For each database: a fresh database, `alembic upgrade head`, the benchmark's bulk seed
(bench/seed.py: N reports over 100 days, about 100 per patient), then uvicorn (one worker,
production settings) and one backtest call as an administrator over a window that holds every
seeded report, proposing a stricter bevacizumab rule (bev-perforation urgent from grade 1).
Prints the reports replayed, wall time, the server's CPU time, and its resident memory before
the call and at its peak (VmHWM), so the growth shows what the replay held at once.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import run as bench  # bench/run.py: databases, migration, the server as production runs it
import seed as seeding
from run import Cleanup, log

from api.security import mint_token
from api.settings import Settings


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proposal(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    drug = client.get("/v1/drugs/bevacizumab", headers=headers).json()
    rules = [r["definition"] for r in drug["rules"] if r["drug_code"] == "bevacizumab"]
    for rule in rules:
        if rule["id"] == "bev-perforation":
            rule["branches"][-1]["when"] = {"symptom": "abdominal_pain", "gte": 1}
    keys = ("name", "brand_names", "drug_class", "route", "vitals", "side_effects")
    return {"code": "bevacizumab", **{k: drug[k] for k in keys}, "rules": rules}


def measure(db: str, reports: int, pg_admin: str, workdir: Path, cleanup: Cleanup) -> dict:
    secret = secrets.token_urlsafe(48)
    database = (
        bench.create_postgres(pg_admin, cleanup)
        if db == "postgres"
        else bench.create_sqlite(workdir, cleanup)
    )
    bench.migrate(database.url, secret, workdir)
    started = time.monotonic()
    seeding.seed(database.url, reports)
    log(f"  {db}: seeded {reports:,} reports in {time.monotonic() - started:.0f} s")
    server, stop = bench.start_server(
        "api.main:app",
        bench.service_env(database.url, secret),
        1,
        workdir / f"backtest-{db}.log",
        workdir,
        cleanup,
    )
    try:
        settings = Settings(_env_file=None, app_env="production", jwt_secret=secret)  # type: ignore[call-arg]
        headers = {"Authorization": f"Bearer {mint_token(settings, sub='bench', role='admin')}"}
        now = datetime.now(UTC)
        span = {
            "since": (now - timedelta(days=seeding.HISTORY_DAYS + 30)).isoformat(),
            "until": (now + timedelta(days=1)).isoformat(),
        }
        with httpx.Client(base_url=server.url, timeout=600) as client:
            body = {"drug": proposal(client, headers), **span}
            rss_before = _status_kb(server.proc.pid, "VmRSS")
            cpu_before = server.cpu_seconds()
            started = time.monotonic()
            response = client.post("/v1/rules/backtest", json=body, headers=headers)
            wall = time.monotonic() - started
            cpu = server.cpu_seconds() - cpu_before
            peak = _status_kb(server.proc.pid, "VmHWM")
        response.raise_for_status()
        result = response.json()
    finally:
        stop()
        database.drop()
    return {
        "db": db,
        "reports": result["reports"],
        "patients": result["patients"],
        "wall_s": wall,
        "server_cpu_s": cpu,
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": peak / 1024,
        "newly_flagged": result["changed_counts"]["newly_flagged"],
        "findings_current": sum(result["current"]["by_severity"].values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", default="100k", type=bench.parse_size)
    parser.add_argument("--db", default="postgres,sqlite", type=bench.parse_list)
    parser.add_argument("--pg-url", default=bench.PG_ADMIN_DEFAULT)
    args = parser.parse_args()
    rows = []
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for db in args.db:
                rows.append(measure(db, args.reports, args.pg_url, Path(tmp), cleanup))
        finally:
            cleanup.run_all()
    print(
        "| database | reports | patients | wall s | server CPU s | RSS before MB | peak RSS MB "
        "| findings (current) | newly flagged |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['db']} | {r['reports']:,} | {r['patients']:,} | {r['wall_s']:.1f} | "
            f"{r['server_cpu_s']:.1f} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['findings_current']:,} | {r['newly_flagged']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
