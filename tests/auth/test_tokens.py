"""Bearer tokens: every bad token is a 401 problem with ``WWW-Authenticate: Bearer``; the secret is
required in production; the development token command mints tokens the app accepts."""

from __future__ import annotations

import base64
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import jwt.warnings
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

import api.__main__ as cli
from api.main import create_app
from api.security import HS256Verifier, VerifiedTokens, principal_from_token
from api.settings import DEV_JWT_SECRET, Settings, get_settings
from tests.conftest import ROOT, TEST_SECRET, make_settings

PROBLEM_JSON = "application/problem+json"
PROTECTED = "/v1/symptoms"  # any role may read it: a 200 means the token was accepted
OTHER_SECRET = "another-secret-" + "y" * 40


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid admin token's claims; ``None`` removes a claim."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "sub": "admin-1",
        "role": "admin",
        "iat": now,
        "exp": now + timedelta(minutes=10),
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def sign(payload: dict[str, Any], key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():  # PyJWT finds the test secret short for HS384/HS512
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: header.payload. with an empty signature."""
    body = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in payload.items()}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == 401
    assert body["title"]
    assert "Traceback" not in response.text


def test_a_valid_token_is_accepted(client: TestClient) -> None:
    assert client.get(PROTECTED, headers=bearer(sign(claims()))).status_code == 200


BAD_HEADERS: dict[str, dict[str, str]] = {
    "missing header": {},
    "empty header": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "scheme and blank": {"Authorization": "Bearer    "},
    "basic scheme": {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
    "token scheme": {"Authorization": f"Token {sign(claims())}"},
    "token without scheme": {"Authorization": sign(claims())},
    "garbage": {"Authorization": "Bearer not-a-jwt"},
    "three garbage parts": {"Authorization": "Bearer aaa.bbb.ccc"},
}


@pytest.mark.parametrize("headers", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_a_missing_or_malformed_authorization_header_is_401(
    client: TestClient, headers: dict[str, str]
) -> None:
    assert_unauthorized(client.get(PROTECTED, headers=headers))


def bad_tokens() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "expired": sign(claims(iat=now - timedelta(hours=2), exp=now - timedelta(hours=1))),
        "wrong signature": sign(claims(), key=OTHER_SECRET),
        "alg none": unsigned(claims()),
        "alg none, uppercase": unsigned(claims()).replace(
            b64({"alg": "none", "typ": "JWT"}), b64({"alg": "NONE", "typ": "JWT"})
        ),
        "HS384 with the right secret": sign(claims(), algorithm="HS384"),
        "HS512 with the right secret": sign(claims(), algorithm="HS512"),
        "signature stripped": sign(claims()).rsplit(".", 1)[0] + ".",
        "payload swapped": _swap_payload(
            sign(claims(role="patient", patient_id=str(uuid.uuid4())))
        ),
        "missing exp": sign(claims(exp=None)),
        "missing sub": sign(claims(sub=None)),
        "empty sub": sign(claims(sub="")),
        "sub not a string": sign(claims(sub=12345)),
        "missing role": sign(claims(role=None)),
        "unknown role": sign(claims(role="superuser")),
        "role not a string": sign(claims(role=["admin"])),
        "patient without patient_id": sign(claims(role="patient")),
        "patient_id not a uuid": sign(claims(role="patient", patient_id="p-1")),
        "teams not a list": sign(claims(role="clinician", teams="onc-a")),
        "teams a list of non-strings": sign(claims(role="clinician", teams=[{"code": "onc-a"}])),
        "exp not a number": sign(claims(exp="tomorrow")),
        "not yet valid (nbf)": sign(claims(nbf=now + timedelta(hours=1))),
    }


def _swap_payload(token: str) -> str:
    """Keep the signature of a patient token, replace its payload by an admin's."""
    header, _, signature = token.split(".")
    forged = b64({"sub": "x", "role": "admin", "exp": int(datetime.now(UTC).timestamp()) + 600})
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("name", bad_tokens().keys())
def test_a_bad_token_is_401(client: TestClient, name: str) -> None:
    assert_unauthorized(client.get(PROTECTED, headers=bearer(bad_tokens()[name])))


def test_a_bad_token_is_401_before_any_role_or_scope_check(client: TestClient) -> None:
    """401 wins over 403/404/422: the caller learns nothing before it is authenticated."""
    expired = bearer(sign(claims(exp=datetime.now(UTC) - timedelta(hours=1))))
    assert_unauthorized(client.get("/v1/audit", headers=expired))
    assert_unauthorized(client.get(f"/v1/patients/{uuid.uuid4()}", headers=expired))
    assert_unauthorized(client.post("/v1/patients", json={"nonsense": 1}, headers=expired))
    assert_unauthorized(client.post(f"/v1/alerts/{uuid.uuid4()}/resolve", json={}, headers={}))


def test_the_401_does_not_echo_the_token(client: TestClient) -> None:
    token = sign(claims(), key=OTHER_SECRET)
    response = client.get(PROTECTED, headers=bearer(token))
    assert_unauthorized(response)
    assert token not in response.text
    assert token.split(".")[1] not in response.text


# --- clock skew -------------------------------------------------------------------------------


def test_a_token_expired_seconds_ago_is_still_accepted(client: TestClient) -> None:
    now = datetime.now(UTC)
    token = sign(claims(iat=now - timedelta(hours=1), exp=now - timedelta(seconds=10)))
    assert client.get(PROTECTED, headers=bearer(token)).status_code == 200


def test_a_token_expired_minutes_ago_is_refused(client: TestClient) -> None:
    now = datetime.now(UTC)
    token = sign(claims(iat=now - timedelta(hours=1), exp=now - timedelta(minutes=5)))
    assert_unauthorized(client.get(PROTECTED, headers=bearer(token)))


# --- issuer and audience, when configured -----------------------------------------------------

ISSUER = "https://idp"
AUDIENCE = "symptoms"


@pytest.fixture
def strict_client(database_url: str) -> Iterator[TestClient]:
    app = create_app(make_settings(database_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


ISS_AUD_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "right iss and aud": ({"iss": ISSUER, "aud": AUDIENCE}, 200),
    "aud among several": ({"iss": ISSUER, "aud": ["other", AUDIENCE]}, 200),
    "no iss": ({"aud": AUDIENCE}, 401),
    "no aud": ({"iss": ISSUER}, 401),
    "neither": ({}, 401),
    "wrong iss": ({"iss": "https://evil", "aud": AUDIENCE}, 401),
    "iss with a trailing slash": ({"iss": ISSUER + "/", "aud": AUDIENCE}, 401),
    "wrong aud": ({"iss": ISSUER, "aud": "billing"}, 401),
    "aud list without ours": ({"iss": ISSUER, "aud": ["billing", "other"]}, 401),
}


@pytest.mark.parametrize(("extra", "expected"), ISS_AUD_CASES.values(), ids=ISS_AUD_CASES.keys())
def test_issuer_and_audience_are_checked_when_configured(
    strict_client: TestClient, extra: dict[str, Any], expected: int
) -> None:
    response = strict_client.get(PROTECTED, headers=bearer(sign(claims(**extra))))
    if expected == 401:
        assert_unauthorized(response)
    else:
        assert response.status_code == expected, response.text


def test_without_configured_issuer_and_audience_any_are_accepted(client: TestClient) -> None:
    token = sign(claims(iss="https://anyone", aud="anything"))
    assert client.get(PROTECTED, headers=bearer(token)).status_code == 200


# --- the secret is required in production -----------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[pytest.MonkeyPatch]:
    """No .env file, no settings from the surrounding environment, no cached settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("APP_ENV", "JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize("secret", [None, "", "short", "changeme", "x" * 31])
def test_production_settings_refuse_a_missing_or_short_secret(
    clean_env: pytest.MonkeyPatch, secret: str | None
) -> None:
    values: dict[str, Any] = {"app_env": "production"}
    if secret is not None:
        values["jwt_secret"] = secret
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_production_settings_refuse_the_development_secret(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, app_env="production", jwt_secret=DEV_JWT_SECRET)  # type: ignore[call-arg]


def test_production_settings_accept_a_secret_of_32_bytes(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, app_env="production", jwt_secret="k" * 32)  # type: ignore[call-arg]
    assert settings.effective_jwt_secret == "k" * 32


@pytest.mark.parametrize("secret", [None, "short"])
def test_the_app_refuses_to_start_in_production_without_a_real_secret(
    clean_env: pytest.MonkeyPatch, secret: str | None
) -> None:
    clean_env.setenv("APP_ENV", "production")
    if secret is not None:
        clean_env.setenv("JWT_SECRET", secret)
    with pytest.raises(SystemExit) as exited:
        create_app()
    message = str(exited.value.code)
    assert "JWT_SECRET" in message
    assert "\n" not in message.strip()
    assert "Traceback" not in message


def test_the_app_starts_in_production_with_a_real_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("APP_ENV", "production")
    clean_env.setenv("JWT_SECRET", TEST_SECRET)
    app = create_app()
    assert app.state.settings.app_env == "production"


# --- the development token command ------------------------------------------------------------


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out.count(".") == 2 and "\n" not in out, out
    return out


def test_the_token_command_mints_a_clinician_token_the_app_accepts(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    client: TestClient,
    app: FastAPI,
) -> None:
    clean_env.setenv("JWT_SECRET", TEST_SECRET)
    get_settings.cache_clear()
    token = run_cli(["token", "--role", "clinician", "--team", "onc-a"], capsys)

    decoded = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert decoded["role"] == "clinician"
    assert decoded["teams"] == ["onc-a"]
    assert decoded["exp"] > datetime.now(UTC).timestamp()

    headers = bearer(token)
    assert client.get("/v1/patients", headers=headers).status_code == 200
    created = client.post("/v1/patients", json={"care_team": "onc-a"}, headers=headers)
    assert created.status_code == 201, created.text
    other = client.post("/v1/patients", json={"care_team": "onc-b"}, headers=headers)
    assert other.status_code == 403, other.text
    assert client.get("/v1/audit", headers=headers).status_code == 403


def test_the_token_command_mints_patient_and_admin_tokens(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], client: TestClient
) -> None:
    clean_env.setenv("JWT_SECRET", TEST_SECRET)
    get_settings.cache_clear()
    admin = bearer(run_cli(["token", "--role", "admin"], capsys))
    patient = client.post("/v1/patients", json={"care_team": "onc-a"}, headers=admin)
    assert patient.status_code == 201, patient.text
    patient_id = patient.json()["id"]

    own = bearer(run_cli(["token", "--role", "patient", "--patient-id", patient_id], capsys))
    assert client.get(f"/v1/patients/{patient_id}", headers=own).status_code == 200
    assert client.get("/v1/patients", headers=own).status_code == 403


@pytest.mark.parametrize(
    "argv",
    [["token", "--role", "patient"], ["token", "--role", "clinician"], ["token", "--role", "root"]],
    ids=["patient without --patient-id", "clinician without --team", "unknown role"],
)
def test_the_token_command_refuses_incomplete_requests(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    clean_env.setenv("JWT_SECRET", TEST_SECRET)
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code != 0
    assert capsys.readouterr().out == ""


def test_the_token_command_refuses_to_sign_in_production_without_a_secret(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("APP_ENV", "production")
    assert cli.main(["token", "--role", "admin"]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "JWT_SECRET" in captured.err


def test_two_authorization_headers_are_400(client: TestClient) -> None:
    valid, other = sign(claims()), sign(claims(sub="someone-else"))
    for pair in ([valid, other], [valid, valid], ["junk", valid]):
        response = client.get(PROTECTED, headers=[("Authorization", f"Bearer {t}") for t in pair])
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        assert "Authorization" in response.json()["detail"]


def test_exp_must_be_a_number(client: TestClient) -> None:
    soon = int((datetime.now(UTC) + timedelta(minutes=10)).timestamp())
    for exp in (str(soon), f"{soon}.0", [soon], {"at": soon}, True):
        assert_unauthorized(client.get(PROTECTED, headers=bearer(sign(claims(exp=exp)))))
    for iat in (str(soon - 600), False):
        assert_unauthorized(client.get(PROTECTED, headers=bearer(sign(claims(iat=iat)))))
    # A float exp is a number.
    assert client.get(PROTECTED, headers=bearer(sign(claims(exp=soon + 0.5)))).status_code == 200


def test_a_token_lives_at_most_jwt_max_lifetime(client: TestClient, database_url: str) -> None:
    now = datetime.now(UTC)
    for exp in (10**20, 2**53, now + timedelta(days=365), now + timedelta(hours=25)):
        assert_unauthorized(client.get(PROTECTED, headers=bearer(sign(claims(exp=exp)))))
    day = bearer(sign(claims(exp=now + timedelta(hours=23))))
    assert client.get(PROTECTED, headers=day).status_code == 200
    # JWT_MAX_LIFETIME_S moves the cap.
    app = create_app(make_settings(database_url, jwt_max_lifetime_s=3600))
    with TestClient(app) as short:
        two_hours = bearer(sign(claims(exp=now + timedelta(hours=2))))
        assert_unauthorized(short.get(PROTECTED, headers=two_hours))
        assert short.get(PROTECTED, headers=bearer(sign(claims()))).status_code == 200


def test_the_token_command_refuses_a_lifetime_over_the_cap(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("JWT_SECRET", TEST_SECRET)
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exited:
        cli.main(["token", "--role", "admin", "--hours", "48"])
    assert exited.value.code != 0
    assert capsys.readouterr().out == ""
    assert run_cli(["token", "--role", "admin", "--hours", "24"], capsys)


def test_env_example_copied_to_env_gives_tokens_the_app_accepts(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    # A new user's first steps: `cp .env.example .env`, then a development token.
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    clean_env.delenv("DATABASE_URL")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.jwt_issuer is None and settings.jwt_audience is None
    token = run_cli(["token", "--role", "admin"], capsys)
    assert principal_from_token(HS256Verifier(settings), token).role == "admin"


def test_a_token_is_verified_once_per_request(app: FastAPI, client: TestClient, world: Any) -> None:
    # Therapies take a role and a patient in scope: both lead to the token.
    patient = world.patient()
    verifier = app.state.token_verifier
    calls: list[str] = []

    class Counting:
        def verify(self, token: str) -> dict[str, Any]:
            calls.append(token)
            return verifier.verify(token)

    app.state.token_verifier = Counting()
    try:
        body = {"drug_code": "aldesleukin", "started_on": "2026-11-01"}
        response = client.post(
            f"/v1/patients/{patient['id']}/therapies", json=body, headers=bearer(sign(claims()))
        )
    finally:
        app.state.token_verifier = verifier
    assert response.status_code == 201, response.text
    assert len(calls) == 1


def test_a_verified_token_is_remembered_until_it_expires_for_a_minute_at_most(
    app: FastAPI, client: TestClient
) -> None:
    verifier = app.state.token_verifier
    calls: list[str] = []
    now = [time.time()]

    class Counting:
        verified = VerifiedTokens(size=2, seconds=60, clock=lambda: now[0])

        def verify(self, token: str) -> dict[str, Any]:
            calls.append(token)
            return verifier.verify(token)

    def get(token: str) -> int:
        return client.get(PROTECTED, headers=bearer(token)).status_code

    start = datetime.now(UTC)
    lasting = sign(claims(sub="a", exp=start + timedelta(minutes=10)))
    brief = sign(claims(sub="b", exp=start + timedelta(seconds=30)))
    forged = sign(claims(sub="c"), key=OTHER_SECRET)
    app.state.token_verifier = Counting()
    try:
        assert [get(lasting), get(lasting), get(brief), get(brief)] == [200] * 4
        assert calls == [lasting, brief]
        # A rejected token is checked every time.
        assert [get(forged), get(forged)] == [401, 401]
        assert calls == [lasting, brief, forged, forged]
        # Past its exp a token is checked again (here still within the leeway, so accepted).
        now[0] = start.timestamp() + 31
        assert [get(brief), get(lasting)] == [200, 200]
        assert calls[4:] == [brief]
        # A minute after it was checked, a token is checked again.
        now[0] = time.time() + 61
        assert get(lasting) == 200
        assert calls[5:] == [lasting]
        # Past its size the oldest token goes: lasting, then brief, then a third.
        third = sign(claims(sub="d"))
        assert [get(brief), get(third), get(lasting)] == [200] * 3
        assert calls[6:] == [brief, third, lasting]
    finally:
        app.state.token_verifier = verifier
