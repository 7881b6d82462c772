"""Identity provider tokens (JWT_JWKS_URL): RS256 and ES256 against a JWKS served over HTTP by a
local server, a key rotation in the middle, a flood of made-up key ids, claim paths."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api import identity
from api.main import create_app
from tests.conftest import make_settings

ISSUER = "https://idp.hospital.test/realms/oncology"
AUDIENCE = "symptom-tracker"


class Provider:
    """A JWKS endpoint whose key set the test changes, counting how often it is asked."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []
        self.fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.fetches += 1
                body = json.dumps({"keys": [provider.jwk(k) for k in provider.published]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, kid: str, kind: str = "RSA") -> None:
        key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.keys[kid] = key
        self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            data = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            data["alg"] = "RS256"
        else:
            data = json.loads(ECAlgorithm.to_jwk(key.public_key()))
            data["alg"] = "ES256"
        return data | {"kid": kid, "use": "sig"}

    def token(self, signer: str, claims: dict[str, Any] | None = None, **header: Any) -> str:
        """Signed with the key ``signer``; ``header`` may name another kid."""
        key = self.keys[signer]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = datetime.now(UTC)
        body = {
            "sub": "nurse-7",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "realm_access": {"roles": ["offline_access", "clinician"]},
            "groups": "onc-a onc-b",
        } | (claims or {})
        return jwt.encode(body, key, algorithm=alg, headers={"kid": signer, **header})


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    p.add("k1")
    yield p
    p.server.shutdown()
    p.server.server_close()


def client_for(database_url: str, provider: Provider, **overrides: Any) -> TestClient:
    settings = make_settings(
        database_url,
        jwt_jwks_url=provider.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_role_claim="realm_access.roles",
        jwt_teams_claim="groups",
        **overrides,
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def status(client: TestClient, token: str) -> int:
    return client.get("/v1/alerts", headers={"Authorization": f"Bearer {token}"}).status_code


def test_provider_tokens_with_a_key_rotation(database_url: str, provider: Provider) -> None:
    with client_for(database_url, provider, jwt_jwks_refetch_s=0) as client:
        assert status(client, provider.token("k1")) == 200
        assert provider.fetches == 1
        assert status(client, provider.token("k1")) == 200
        assert provider.fetches == 1  # cached

        # The provider rotates: k2 published, k1 withdrawn.
        provider.add("k2", kind="EC")
        provider.published.remove("k1")
        assert status(client, provider.token("k2")) == 200  # unknown kid: one refetch
        assert provider.fetches == 2
        assert status(client, provider.token("k1")) == 401  # withdrawn with that refetch


def test_made_up_key_ids_cost_the_provider_one_fetch_per_window(
    database_url: str, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(identity, "monotonic", lambda: now[0])
    with client_for(database_url, provider, jwt_jwks_refetch_s=30) as client:
        assert status(client, provider.token("k1")) == 200
        assert provider.fetches == 1
        now[0] += 31  # the refetch window has passed: the next unknown kid may refetch once
        for _ in range(50):
            forged = provider.token("k1", kid=f"forged-{uuid.uuid4().hex}")
            assert status(client, forged) == 401
        assert provider.fetches == 2
        now[0] += 10
        assert status(client, provider.token("k1", kid="forged-again")) == 401
        assert provider.fetches == 2  # still inside the window
        assert status(client, provider.token("k1")) == 200  # known keys go on working


# The app here commits (it is not the rolled-back test app): `committed_client` removes the
# patient made here when the test ends.
@pytest.mark.usefixtures("committed_client")
def test_claims_come_from_the_configured_paths(database_url: str, provider: Provider) -> None:
    with client_for(database_url, provider) as client:
        admin = provider.token("k1", {"realm_access": {"roles": ["admin", "clinician"]}})
        created = client.post(
            "/v1/patients",
            json={"care_team": "onc-c"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        url = f"/v1/patients/{patient_id}"
        nurse = provider.token("k1")  # clinician of onc-a and onc-b: not onc-c
        assert client.get(url, headers={"Authorization": f"Bearer {nurse}"}).status_code == 404
        other = provider.token("k1", {"groups": "onc-c"})
        assert client.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 200
        none = provider.token("k1", {"realm_access": {"roles": ["offline_access"]}})
        assert status(client, none) == 401


@pytest.mark.parametrize(
    ("claims", "header"),
    [
        pytest.param({"iss": "https://elsewhere.test"}, {}, id="other issuer"),
        pytest.param({"aud": "another-app"}, {}, id="other audience"),
        pytest.param({"exp": datetime.now(UTC) - timedelta(hours=1)}, {}, id="expired"),
        pytest.param({"exp": datetime.now(UTC) + timedelta(days=30)}, {}, id="lives too long"),
    ],
)
def test_bad_provider_tokens_are_refused(
    database_url: str, provider: Provider, claims: dict[str, Any], header: dict[str, Any]
) -> None:
    with client_for(database_url, provider) as client:
        assert status(client, provider.token("k1", claims, **header)) == 401


def test_no_key_confusion_and_no_shared_secret_unless_set(
    database_url: str, provider: Provider
) -> None:
    public_pem = (
        provider.keys["k1"]
        .public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    now = datetime.now(UTC)
    claims = {"sub": "x", "role": "admin", "iss": ISSUER, "aud": AUDIENCE, "iat": now,
              "exp": now + timedelta(minutes=5)}  # fmt: skip
    # HS256 keyed with the provider's public key (the classic confusion attack)
    confused = jwt.encode(claims, public_pem.decode()[:64], algorithm="HS256",
                          headers={"kid": "k1"})  # fmt: skip
    with client_for(database_url, provider, jwt_secret="") as client:
        assert status(client, confused) == 401
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
        assert status(client, unsigned) == 401
        # with no JWT_SECRET the development key signs nothing that is accepted
        dev = jwt.encode(claims | {"role": "admin"}, "x" * 40, algorithm="HS256")
        assert status(client, dev) == 401


def test_a_key_fetch_runs_off_the_event_loop(
    database_url: str, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking the provider is blocking I/O: it runs in a worker thread, never on the loop."""
    threads: list[str] = []
    fetch = identity.JWKSVerifier._fetch

    def recording_fetch(self: identity.JWKSVerifier) -> None:
        threads.append(threading.current_thread().name)
        fetch(self)

    monkeypatch.setattr(identity.JWKSVerifier, "_fetch", recording_fetch)
    with client_for(database_url, provider, jwt_jwks_refetch_s=0) as client:
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
        assert status(client, provider.token("k1")) == 200
        provider.add("k2")
        assert status(client, provider.token("k2")) == 200
    assert len(threads) == 2
    assert loop_thread not in threads
