"""Command line: `python -m api token --role clinician --team onc-a` prints a signed token;
`python -m api serve` serves the API."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import timedelta

from pydantic import ValidationError

from api.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a bearer token signed with JWT_SECRET")
    token.add_argument("--role", choices=["patient", "clinician", "admin"], required=True)
    token.add_argument("--sub", help="user id (default: a role-based name)")
    token.add_argument("--patient-id", type=uuid.UUID, help="role patient: the patient record")
    token.add_argument("--team", action="append", default=[], help="role clinician; repeatable")
    token.add_argument("--hours", type=float, default=12.0, help="lifetime (default 12)")
    serve = commands.add_parser("serve", help="serve the API (uvicorn, with its limits set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* from FORWARDED_ALLOW_IPS"
    )
    commands.add_parser(
        "worker", help="run the job loop (escalation, webhooks) until SIGINT/SIGTERM"
    )
    args = parser.parse_args(argv)

    try:
        settings = get_settings()
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.command == "worker":
        import anyio

        from api.notifications.worker import run_standalone

        anyio.run(run_standalone, settings)
        return 0
    if args.command == "serve":
        from api.server import serve as run

        return run(args.host, args.port, args.workers, args.proxy_headers)
    if args.hours * 3600 > settings.jwt_max_lifetime_s:
        longest = settings.jwt_max_lifetime_s / 3600
        parser.error(f"--hours: at most {longest:g} (JWT_MAX_LIFETIME_S)")
    if args.role == "patient" and args.patient_id is None:
        parser.error("--patient-id is required for --role patient")
    if args.role == "clinician" and not args.team:
        parser.error("--team is required for --role clinician")

    from api.security import mint_token

    print(
        mint_token(
            settings,
            sub=args.sub or f"dev-{args.role}",
            role=args.role,
            patient_id=args.patient_id,
            teams=args.team,
            ttl=timedelta(hours=args.hours),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
