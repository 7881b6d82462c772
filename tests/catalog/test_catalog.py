from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.catalog import sync
from api.catalog.shipped import load_shipped_catalog
from api.main import create_app
from tests.conftest import Tokens, fresh_database, make_settings, report_body, upgrade

API_SYMPTOMS = {
    "fever", "chills", "nausea", "vomiting", "fatigue", "rash", "hair_thinning", "diarrhea",
    "muscle_aches", "headache", "shortness_of_breath", "swelling", "dizziness", "chest_pain",
    "palpitations", "confusion", "decreased_urination", "vision_change", "numbness_tingling",
    "allergic_reaction", "depressed_mood", "self_harm_thoughts", "bleeding_bruising",
    "sore_throat", "abdominal_pain",
}  # fmt: skip
DRUGS = {
    "aldesleukin", "interferon_alfa_2b", "ropeginterferon_alfa_2b", "peginterferon_alfa_2a",
    "filgrastim", "bevacizumab",
}  # fmt: skip
SNOMED = {"fever": "386661006", "chills": "43724002", "chest_pain": "29857009"}


def test_symptom_vocabulary(client: TestClient, tokens: Tokens) -> None:
    response = client.get("/v1/symptoms", headers=tokens.clinician("onc-a"))
    assert response.status_code == 200
    symptoms = {s["code"]: s for s in response.json()}
    assert set(symptoms) >= API_SYMPTOMS
    for code, symptom in symptoms.items():
        assert list(symptom["grades"]) == ["0", "1", "2", "3", "4"], code
        assert symptom["grades"]["0"].lower() == "none"
        assert symptom["grades"]["4"].lower() == "very severe"
        assert symptom["question"].endswith("?"), code
        assert symptom["category"] and symptom["ctcae_term"], code
    for code, snomed in SNOMED.items():
        assert symptoms[code]["snomed"] == snomed


def test_drug_list_and_detail(client: TestClient, tokens: Tokens) -> None:
    headers = tokens.patient("00000000-0000-0000-0000-000000000001")
    drugs = {d["code"]: d for d in client.get("/v1/drugs", headers=headers).json()}
    assert set(drugs) == DRUGS
    assert drugs["aldesleukin"]["brand_names"] == ["Proleukin"]

    detail = client.get("/v1/drugs/aldesleukin", headers=headers).json()
    effects = {e["symptom_code"]: e for e in detail["side_effects"]}
    assert effects["swelling"]["frequency"] == "serious"
    assert effects["nausea"]["frequency"] == "common"
    rule_ids = {r["id"] for r in detail["rules"]}
    # Its own rules and the rules that apply to every drug; not other drugs' rules.
    assert {"cls-hypotension", "cls-weight", "cls-composite", "il2-neuro", "fever"} <= rule_ids
    assert not rule_ids & {"bev-perforation", "gcsf-spleen", "ifn-mood"}
    cls = next(r for r in detail["rules"] if r["id"] == "cls-weight")
    assert cls["version"] == 1 and cls["drug_code"] == "aldesleukin"
    assert cls["severities"] == ["emergency", "urgent"]

    interferon = client.get("/v1/drugs/interferon_alfa_2b", headers=headers).json()
    assert "ifn-mood" in {r["id"] for r in interferon["rules"]}
    assert client.get("/v1/drugs/no_such_drug", headers=headers).status_code == 404


@pytest.fixture
def admin_client(fresh_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(fresh_app, raise_server_exceptions=False) as client:
        yield client


def own_body(client: TestClient, code: str, headers: dict[str, str]) -> dict[str, Any]:
    drug = client.get(f"/v1/drugs/{code}", headers=headers).json()
    return {
        "name": drug["name"],
        "brand_names": drug["brand_names"],
        "drug_class": drug["drug_class"],
        "route": drug["route"],
        "vitals": drug["vitals"],
        "side_effects": drug["side_effects"],
        "rules": [r["definition"] for r in drug["rules"] if r["drug_code"] == code],
    }


def test_put_creates_and_replaces_a_drug(admin_client: TestClient, tokens: Tokens) -> None:
    admin = tokens.admin()
    body = {
        "name": "Pembro-like test drug",
        "brand_names": ["Testumab"],
        "drug_class": "checkpoint_inhibitor",
        "route": "intravenous",
        "vitals": ["temperature_c"],
        "side_effects": [{"symptom_code": "rash", "frequency": "common", "note": "itchy"}],
        "rules": [
            {
                "id": "test-rash",
                "title": "Rash on the test drug",
                "source": "test",
                "branches": [{"severity": "urgent", "when": {"symptom": "rash", "gte": 2}}],
            }
        ],
    }
    created = admin_client.put("/v1/drugs/test_drug", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert {r["id"] for r in created.json()["rules"]} >= {"test-rash", "fever"}

    body["side_effects"].append({"symptom_code": "fatigue", "frequency": "common"})
    replaced = admin_client.put("/v1/drugs/test_drug", json=body, headers=admin)
    assert replaced.status_code == 200
    assert [e["symptom_code"] for e in replaced.json()["side_effects"]] == ["rash", "fatigue"]
    test_rule = next(r for r in replaced.json()["rules"] if r["id"] == "test-rash")
    assert test_rule["version"] == 1  # unchanged rule: same version


def test_put_is_validated_as_a_whole(admin_client: TestClient, tokens: Tokens) -> None:
    admin = tokens.admin()
    body = own_body(admin_client, "bevacizumab", admin)
    body["side_effects"].append({"symptom_code": "no_such_symptom", "frequency": "common"})
    body["rules"].append(
        {
            "id": "cls-weight",  # belongs to aldesleukin
            "title": "stolen",
            "source": "test",
            "branches": [{"severity": "urgent", "when": {"symptom": "made_up", "gte": 1}}],
        }
    )
    response = admin_client.put("/v1/drugs/bevacizumab", json=body, headers=admin)
    assert response.status_code == 422
    problem = response.json()
    messages = " ".join(e["msg"] for e in problem["errors"])
    assert "no_such_symptom" in messages and "made_up" in messages and "cls-weight" in messages
    # Nothing of the invalid body was applied.
    after = admin_client.get("/v1/drugs/bevacizumab", headers=admin).json()
    assert "no_such_symptom" not in {e["symptom_code"] for e in after["side_effects"]}

    bad_grammar = own_body(admin_client, "bevacizumab", admin)
    bad_grammar["rules"][0]["branches"][0]["when"] = {"symptom": "headache", "gte": 9}
    response = admin_client.put("/v1/drugs/bevacizumab", json=bad_grammar, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][:3] == ["body", "rules", 0]


def test_changed_rule_gets_a_new_version_and_old_alerts_keep_theirs(
    admin_client: TestClient, tokens: Tokens
) -> None:
    admin = tokens.admin()
    patient = admin_client.post("/v1/patients", json={"care_team": "onc-a"}, headers=admin).json()
    admin_client.post(
        f"/v1/patients/{patient['id']}/therapies",
        json={"drug_code": "bevacizumab", "started_on": "2026-01-01"},
        headers=admin,
    )
    url = f"/v1/patients/{patient['id']}/reports"
    first = admin_client.post(url, json=report_body({"abdominal_pain": 3}), headers=admin).json()
    old = next(a for a in first["alerts"] if a["rule_id"] == "bev-perforation")
    assert old["rule_version"] == 1

    body = own_body(admin_client, "bevacizumab", admin)
    rule = next(r for r in body["rules"] if r["id"] == "bev-perforation")
    rule["branches"][0]["when"] = {"symptom": "abdominal_pain", "gte": 2}
    assert admin_client.put("/v1/drugs/bevacizumab", json=body, headers=admin).status_code == 200
    detail = admin_client.get("/v1/drugs/bevacizumab", headers=admin).json()
    assert next(r for r in detail["rules"] if r["id"] == "bev-perforation")["version"] == 2

    admin_client.post(f"/v1/alerts/{old['id']}/resolve", json={"note": "seen"}, headers=admin)
    second = admin_client.post(url, json=report_body({"abdominal_pain": 2}), headers=admin).json()
    new = next(a for a in second["alerts"] if a["rule_id"] == "bev-perforation")
    assert new["rule_version"] == 2
    assert admin_client.get(f"/v1/alerts/{old['id']}", headers=admin).json()["rule_version"] == 1


def test_shipping_a_changed_catalog_and_upgrading_updates_it(
    tmp_path: Path, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fresh_database(tmp_path) as url:
        upgrade(url)
        app = create_app(make_settings(url))
        with TestClient(app) as client:
            admin = tokens.admin()
            # An administrator's own change to a drug the new release does not touch survives.
            body = own_body(client, "filgrastim", admin)
            body["brand_names"] = ["Neupogen", "Local brand"]
            assert client.put("/v1/drugs/filgrastim", json=body, headers=admin).status_code == 200

            shipped = load_shipped_catalog()
            rules = [
                r.model_copy(update={"title": "Very high temperature (revised)"})
                if r.id == "fever-very-high"
                else r
                for r in shipped.rules
            ]
            monkeypatch.setattr(sync, "load_shipped_catalog", lambda: replace(shipped, rules=rules))
            upgrade(url)  # the next release's `alembic upgrade head`
            upgrade(url)  # and again: nothing more changes

            detail = client.get("/v1/drugs/aldesleukin", headers=admin).json()
            rule = next(r for r in detail["rules"] if r["id"] == "fever-very-high")
            assert rule["version"] == 2
            assert rule["title"] == "Very high temperature (revised)"
            filgrastim = client.get("/v1/drugs/filgrastim", headers=admin).json()
            assert filgrastim["brand_names"] == ["Neupogen", "Local brand"]
