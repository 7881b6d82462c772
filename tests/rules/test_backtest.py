"""POST /v1/rules/backtest: a proposed drug entry replayed over stored reports, nothing stored."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.rules import backtest
from tests.catalog.test_catalog import own_body
from tests.conftest import Tokens, World

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
URL = "/v1/rules/backtest"


def entry(client: TestClient, headers: dict[str, str], code: str) -> dict[str, Any]:
    """The drug's entry as PUT /v1/drugs/{code} takes it, with its code: today's rules."""
    return {"code": code, **own_body(client, code, headers)}


def window(days: int = 30) -> dict[str, str]:
    return {"since": (NOW - days * DAY).isoformat(), "until": (NOW + DAY).isoformat()}


def run(
    client: TestClient, headers: dict[str, str], drug: dict[str, Any], **span: str
) -> dict[str, Any]:
    response = client.post(URL, json={"drug": drug, **(span or window())}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def seed(world: World) -> dict[str, list[str]]:
    """Two bevacizumab patients and one on filgrastim, with belly pain of every grade."""
    ids: dict[str, list[str]] = {"bev_pain_1": [], "bev": [], "fil": []}
    for _ in range(2):
        p = world.patient(drugs=("bevacizumab",), started_on=(NOW - 60 * DAY).date().isoformat())
        for days, grade in ((20, 0), (10, 1), (5, 2), (1, 3)):
            body = world.report(p["id"], {"abdominal_pain": grade}, recorded_at=NOW - days * DAY)
            ids["bev"].append(body["id"])
            if grade == 1:
                ids["bev_pain_1"].append(body["id"])
    p = world.patient(drugs=("filgrastim",))
    for days, grade in ((4, 1), (2, 2)):
        ids["fil"].append(world.report(p["id"], {"abdominal_pain": grade},
                                       recorded_at=NOW - days * DAY)["id"])  # fmt: skip
    return ids


def test_unchanged_rules_make_no_difference(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    seed(world)
    admin = tokens.admin()
    result = run(client, admin, entry(client, admin, "bevacizumab"))
    assert (result["reports"], result["patients"]) == (10, 3)
    assert result["current"] == result["proposed"]
    assert result["newly_flagged"] == result["no_longer_flagged"] == []
    assert result["severity_changed"] == []
    assert result["changed_counts"] == {
        "newly_flagged": 0,
        "no_longer_flagged": 0,
        "severity_changed": 0,
    }
    # what the current rules raise, per report: bev-perforation at 2 (urgent) and 3
    # (emergency) on each bevacizumab patient; gcsf-spleen at 2 on filgrastim; worsening 0 -> 2
    by_rule = result["current"]["by_rule"]
    assert by_rule["bev-perforation"] == 4
    assert by_rule["gcsf-spleen"] == 1
    # 1 -> 3 within 14 days on each bevacizumab patient (the grade 0 is 19 days older)
    assert by_rule["worsening"] == 2
    assert by_rule["severe-symptom"] == 2
    assert sum(result["current"]["by_severity"].values()) == sum(by_rule.values())


def test_a_stricter_rule_shows_exactly_the_reports_it_would_add(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    ids = seed(world)
    admin = tokens.admin()
    alerts_before = client.get("/v1/alerts?limit=200", headers=admin).json()["items"]
    drug = entry(client, admin, "bevacizumab")
    rule = next(r for r in drug["rules"] if r["id"] == "bev-perforation")
    rule["branches"][-1]["when"] = {"symptom": "abdominal_pain", "gte": 1}  # urgent from 1
    result = run(client, admin, drug)

    assert sorted(f["report_id"] for f in result["newly_flagged"]) == sorted(ids["bev_pain_1"])
    assert {(f["rule_id"], f["severity"]) for f in result["newly_flagged"]} == {
        ("bev-perforation", "urgent")
    }
    assert result["no_longer_flagged"] == []
    assert result["changed_counts"]["newly_flagged"] == 2
    delta = result["proposed"]["by_rule"]["bev-perforation"]
    assert delta == result["current"]["by_rule"]["bev-perforation"] + 2
    assert result["proposed"]["by_severity"]["urgent"] == (
        result["current"]["by_severity"]["urgent"] + 2
    )
    # nothing stored, nothing changed
    assert client.get("/v1/alerts?limit=200", headers=admin).json()["items"] == alerts_before
    detail = client.get("/v1/drugs/bevacizumab", headers=admin).json()
    stored = next(r for r in detail["rules"] if r["id"] == "bev-perforation")
    assert stored["version"] == 1


def test_removing_a_rule_and_changing_a_severity(
    world: World, client: TestClient, tokens: Tokens
) -> None:
    ids = seed(world)
    admin = tokens.admin()
    drug = entry(client, admin, "filgrastim")
    drug["rules"] = [r for r in drug["rules"] if r["id"] != "gcsf-spleen"]
    result = run(client, admin, drug)
    assert result["no_longer_flagged"] == [
        {"report_id": ids["fil"][1], "rule_id": "gcsf-spleen", "severity": "emergency",
         "from_severity": None}
    ]  # fmt: skip
    assert result["newly_flagged"] == []
    assert "gcsf-spleen" not in result["proposed"]["by_rule"]

    drug = entry(client, admin, "bevacizumab")
    rule = next(r for r in drug["rules"] if r["id"] == "bev-perforation")
    rule["branches"][0]["severity"] = "urgent"  # grade 3: emergency -> urgent
    result = run(client, admin, drug)
    assert {
        (c["rule_id"], c["from_severity"], c["severity"]) for c in result["severity_changed"]
    } == {("bev-perforation", "emergency", "urgent")}
    assert result["changed_counts"]["severity_changed"] == 2


def test_history_before_the_window_counts(world: World, client: TestClient, tokens: Tokens) -> None:
    """The trend rule looks back 14 days before each report, also past the window's start."""
    p = world.patient(drugs=("interferon_alfa_2b",))
    world.report(p["id"], {"fatigue": 0}, recorded_at=NOW - 10 * DAY)
    world.report(p["id"], {"fatigue": 2}, recorded_at=NOW - 2 * DAY)
    admin = tokens.admin()
    span = {"since": (NOW - 5 * DAY).isoformat(), "until": NOW.isoformat()}
    result = run(client, admin, entry(client, admin, "interferon_alfa_2b"), **span)
    assert result["reports"] == 1
    assert result["current"]["by_rule"] == {"worsening": 1}


def test_pages_give_the_same_answer(
    world: World, client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(world)
    admin = tokens.admin()
    drug = entry(client, admin, "bevacizumab")
    rule = next(r for r in drug["rules"] if r["id"] == "bev-perforation")
    rule["branches"][-1]["when"] = {"symptom": "abdominal_pain", "gte": 1}
    whole = run(client, admin, drug)
    monkeypatch.setattr(backtest, "PAGE", 3)  # patients' reports split across pages
    monkeypatch.setattr(backtest, "_page", backtest._page.limit(3))
    assert run(client, admin, drug) == whole


def test_only_an_admin_may_run_it(world: World, client: TestClient, tokens: Tokens) -> None:
    admin = tokens.admin()
    body = {"drug": entry(client, admin, "bevacizumab"), **window()}
    assert client.post(URL, json=body, headers=tokens.clinician("onc-a")).status_code == 403
    p = world.patient()
    assert client.post(URL, json=body, headers=tokens.patient(p["id"])).status_code == 403
    assert client.post(URL, json=body).status_code == 401


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (
            lambda b: b["drug"]["side_effects"].append(
                {"symptom_code": "hiccups", "frequency": "common"}
            ),
            ["body", "drug", "side_effects", 8, "symptom_code"],
        ),
        (
            lambda b: b["drug"]["rules"][0]["branches"][0].update(severity="critical"),
            ["body", "drug", "rules", 0, "branches", 0, "severity"],
        ),
        (lambda b: b["drug"].pop("drug_class"), ["body", "drug", "drug_class"]),
        (lambda b: b.update(until=(NOW + 400 * DAY).isoformat()), ["body", "until"]),
        (lambda b: b.update(until=b["since"]), ["body", "until"]),
        (lambda b: b.update(since="yesterday"), ["body", "since"]),
    ],
)
def test_invalid_input_is_a_422_naming_the_field(
    client: TestClient, tokens: Tokens, change: Any, loc: list[Any]
) -> None:
    admin = tokens.admin()
    body = {"drug": entry(client, admin, "bevacizumab"), **window()}
    body = copy.deepcopy(body)
    change(body)
    response = client.post(URL, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert loc in [e["loc"][: len(loc)] for e in response.json()["errors"]], response.json()


def test_a_window_of_366_days_is_allowed(client: TestClient, tokens: Tokens) -> None:
    admin = tokens.admin()
    span = {"since": (NOW - 366 * DAY).isoformat(), "until": NOW.isoformat()}
    result = run(client, admin, entry(client, admin, "bevacizumab"), **span)
    assert result["reports"] == 0
