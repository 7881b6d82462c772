"""Shipping the clinical rules v2 through `alembic upgrade head` over a database that holds the
previous release's rules (kept as tests/catalog/data/rules_previous_release.yaml)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.catalog import sync
from api.catalog.service import content_hash, rule_json
from api.catalog.shipped import load_shipped_catalog
from api.main import create_app
from api.rules.loader import load_rules_file
from tests.conftest import Tokens, fresh_database, make_settings, report_body, upgrade

PREVIOUS = load_rules_file(Path(__file__).parent / "data" / "rules_previous_release.yaml")


def rule_versions(client: TestClient, headers: dict[str, str]) -> dict[str, int]:
    versions: dict[str, int] = {}
    for drug in client.get("/v1/drugs", headers=headers).json():
        detail = client.get(f"/v1/drugs/{drug['code']}", headers=headers).json()
        versions |= {r["id"]: r["version"] for r in detail["rules"]}
    return versions


def test_upgrading_the_previous_release_versions_every_changed_rule(
    tmp_path: Path, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = load_shipped_catalog()
    with fresh_database(tmp_path) as url:
        previous = replace(current, rules=PREVIOUS.rules, policy=PREVIOUS.policy)
        monkeypatch.setattr(sync, "load_shipped_catalog", lambda: previous)
        upgrade(url)  # the previous release's database
        app = create_app(make_settings(url))
        with TestClient(app) as client:
            admin = tokens.admin()
            patient = client.post("/v1/patients", json={"care_team": "onc-a"}, headers=admin)
            patient_id = patient.json()["id"]
            therapy = {"drug_code": "bevacizumab", "started_on": "2026-01-01"}
            client.post(f"/v1/patients/{patient_id}/therapies", json=therapy, headers=admin)
            url_reports = f"/v1/patients/{patient_id}/reports"
            body = report_body({"abdominal_pain": 3, "headache": 4})
            old = {a["rule_id"]: a for a in client.post(url_reports, json=body, headers=admin)
                   .json()["alerts"]}  # fmt: skip
            assert old["very-severe-serious"]["rule_version"] == 1
            assert old["bev-perforation"]["rule_version"] == 1

            monkeypatch.setattr(sync, "load_shipped_catalog", lambda: current)
            upgrade(url)  # this release's `alembic upgrade head`
            upgrade(url)  # and again: nothing more changes

            before = {r.id: content_hash(rule_json(r)) for r in PREVIOUS.rules}
            versions = rule_versions(client, admin)
            for rule in current.rules:
                if rule.id not in before:
                    expected = 1  # new in this release
                elif before[rule.id] == content_hash(rule_json(rule)):
                    expected = 1  # unchanged: no new version
                else:
                    expected = 2
                assert versions[rule.id] == expected, rule.id
            assert versions["bev-perforation"] == 2
            assert versions["il2-urine"] == 1  # one that did not change
            assert "very-severe-serious" not in versions  # retired

            # Alerts raised under the old versions keep citing them.
            for rule_id, alert in old.items():
                stored = client.get(f"/v1/alerts/{alert['id']}", headers=admin).json()
                assert stored["rule_version"] == alert["rule_version"], rule_id
            # The new versions raise from now on.
            for alert in old.values():
                client.post(f"/v1/alerts/{alert['id']}/resolve", json={"note": "ok"},
                            headers=admin)  # fmt: skip
            again = client.post(url_reports, json=report_body({"abdominal_pain": 2}),
                                headers=admin).json()  # fmt: skip
            new = {a["rule_id"]: a for a in again["alerts"]}
            assert new["bev-perforation"]["severity"] == "urgent"
            assert new["bev-perforation"]["rule_version"] == 2
