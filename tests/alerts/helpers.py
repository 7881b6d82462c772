"""Small shared helpers for the alert tests (no fixtures: conftest files are not ours to add)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

WINDOWS = {
    "emergency": timedelta(hours=1),
    "urgent": timedelta(hours=24),
    "routine": timedelta(hours=72),
}
RANK = {"routine": 1, "urgent": 2, "emergency": 3}


def ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def by_rule(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        assert alert["rule_id"] not in out, f"two alerts for {alert['rule_id']} in one response"
        out[alert["rule_id"]] = alert
    return out


def highest(alerts: list[dict[str, Any]]) -> str | None:
    return max((a["severity"] for a in alerts), key=RANK.__getitem__, default=None)


def holds(evidence: Any, *values: Any) -> bool:
    """Somewhere in ``evidence`` one object (dict) carries all ``values`` among its values.

    The evidence shape is the service's to choose; the contract is only that it holds the
    values that fired as data, e.g. ("systolic_bp", 84) or ("nausea", 3).
    """
    if isinstance(evidence, dict):
        present = [*evidence.values(), *evidence.keys()]  # a code may be a value or a key
        if all(any(_same(v, p) for p in present) for v in values):
            return True
        return any(holds(v, *values) for v in evidence.values())
    if isinstance(evidence, list):
        return any(holds(v, *values) for v in evidence)
    return False


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return abs(expected - actual) < 1e-9
    return expected == actual


def list_all(client: Any, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/alerts", params={"limit": 200, **params}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return body["items"]
