"""What the documented ways of running the service print: never a patient id, query or token.

The in-process client never reaches uvicorn's own loggers, so these start the real commands
(`make run`, the README's production command, the Dockerfile's CMD, and the contract's bare
`uvicorn api.main:app`) as processes and read everything they print.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Tokens
from tests.foundation.test_deploy import _dockerfile_json
from tests.resilience.served import (
    free_port,
    local_command,
    makefile_run_command,
    readme_production_command,
    serve,
)

COMMANDS = {
    "make run": makefile_run_command,
    "README production": readme_production_command,
    "Dockerfile CMD": lambda: _dockerfile_json("CMD"),
    "uvicorn api.main:app": lambda: ["uvicorn", "api.main:app", "--host", "h", "--port", "0"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_served_process_prints_no_patient_id_query_or_token(
    name: str, database_url: str, tokens: Tokens, tmp_path: Path
) -> None:
    argv = local_command(COMMANDS[name](), free_port())
    patient_id = str(uuid.uuid4())
    token = tokens.admin()["Authorization"].removeprefix("Bearer ")
    with serve(argv, tmp_path / "out.log", DATABASE_URL=database_url) as served:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=served.base, timeout=20) as client:
            assert client.get(f"/v1/patients/{patient_id}", headers=headers).status_code == 404
            client.get(
                f"/v1/patients/{patient_id}/reports",
                params={"since": "2026-01-01T00:00:00Z", "access_token": token},
                headers=headers,
            )
            client.get("/v1/alerts", params={"patient_id": patient_id}, headers=headers)
            client.get(f"/v1/patients/{patient_id}?access_token={token}")
    printed = served.output()
    # The app's own line is there, with the route template only.
    routes = [
        json.loads(line)["route"] for line in printed.splitlines() if line.startswith('{"event"')
    ]
    assert "/v1/patients/{patient_id}/reports" in routes, printed
    secrets = (patient_id, token, "access_token", "since=", "2026-01-01")
    leaked = [value for value in secrets if value in printed]
    assert not leaked, f"{name} printed {leaked}:\n{printed}"
