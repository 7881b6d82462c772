"""Tokens signed by a hospital's identity provider, verified against its JWKS.

``JWT_JWKS_URL`` names the provider's key set. Keys are cached; a token naming a ``kid`` the
cache lacks triggers one refetch, at most one every ``JWT_JWKS_REFETCH_S`` seconds per process,
so a flood of tokens with made-up ``kid``s costs the provider nothing. The whole set is refetched
when it is older than ``JWT_JWKS_CACHE_S`` (a key the provider retired stops being accepted).

Where the provider puts role, teams and patient id in other claims (Keycloak:
``realm_access.roles``), ``JWT_ROLE_CLAIM``, ``JWT_TEAMS_CLAIM`` and ``JWT_PATIENT_CLAIM`` name
them, dotted paths reaching into nested objects.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Any

import jwt

from api.security import HS256Verifier, TokenVerifier, VerifiedTokens, decode_checked
from api.settings import Settings

ALGORITHMS = ("RS256", "ES256")
ROLES = ("admin", "clinician", "patient")  # a list of roles maps to the first of these it holds


def claim_at(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def map_claims(claims: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The token's claims with ``role``, ``teams`` and ``patient_id`` where the service reads
    them, taken from the configured claim paths."""
    mapped = dict(claims)
    role = claim_at(claims, settings.jwt_role_claim)
    if isinstance(role, list):
        role = next((r for r in ROLES if r in role), None)
    mapped["role"] = role
    teams = claim_at(claims, settings.jwt_teams_claim)
    if isinstance(teams, str):  # "onc-a onc-b" or "onc-a,onc-b", as some providers send them
        teams = [t for t in teams.replace(",", " ").split() if t]
    mapped["teams"] = teams if teams is not None else []
    mapped["patient_id"] = claim_at(claims, settings.jwt_patient_claim)
    return mapped


class JWKSVerifier:
    algorithms = ALGORITHMS

    def __init__(self, settings: Settings) -> None:
        if not settings.jwt_jwks_url:
            raise ValueError("JWT_JWKS_URL is not set")
        self._client = jwt.PyJWKClient(
            settings.jwt_jwks_url, cache_jwk_set=False, cache_keys=False, timeout=3
        )
        self._cache_s = settings.jwt_jwks_cache_s
        self._refetch_s = settings.jwt_jwks_refetch_s
        self._settings = settings
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self.fetches = 0  # how often the provider was asked (tests and metrics read it)
        self.verified = VerifiedTokens()

    def _fetch(self) -> None:
        self.fetches += 1
        self._fetched_at = monotonic()
        keys = self._client.get_jwk_set(refresh=True).keys
        withdrawn = self._keys.keys() - {k.key_id for k in keys}
        self._keys = {k.key_id: k for k in keys if k.key_id}
        if withdrawn:
            # Tokens signed with a withdrawn key stop working now, not when remembered ones end.
            self.verified.clear()

    def signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            age = monotonic() - self._fetched_at
            if age >= self._cache_s or (kid not in self._keys and age >= self._refetch_s):
                try:
                    self._fetch()
                except jwt.PyJWKClientError as exc:
                    if not self._keys:
                        raise jwt.InvalidTokenError("the provider's keys are out of reach") from exc
            key = self._keys.get(kid)
        if key is None:
            raise jwt.InvalidTokenError("the token names an unknown signing key")
        return key

    def needs_fetch(self, token: str) -> bool:
        """Whether verifying ``token`` would ask the provider first (then: not on the loop)."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return False
        age = monotonic() - self._fetched_at
        return age >= self._cache_s or (kid not in self._keys and age >= self._refetch_s)

    def verify(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self.algorithms:
            raise jwt.InvalidTokenError("the token's algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidTokenError("the token names no signing key")
        key = self.signing_key(kid)
        claims = decode_checked(token, key.key, [header["alg"]], self._settings)
        return map_claims(claims, self._settings)


class EitherVerifier:
    """The identity provider's tokens, and HS256 ones where a ``JWT_SECRET`` is set too."""

    def __init__(self, jwks: JWKSVerifier, hs256: HS256Verifier | None) -> None:
        self._jwks = jwks
        self._hs256 = hs256
        self.verified = jwks.verified

    def needs_fetch(self, token: str) -> bool:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            return False
        return not (alg == "HS256" and self._hs256 is not None) and self._jwks.needs_fetch(token)

    def verify(self, token: str) -> dict[str, Any]:
        alg = jwt.get_unverified_header(token).get("alg")
        if alg == "HS256" and self._hs256 is not None:
            return self._hs256.verify(token)
        return self._jwks.verify(token)


def token_verifier(settings: Settings) -> TokenVerifier:
    """HS256 alone, or the identity provider's keys (with HS256 when a secret is set)."""
    if not settings.jwt_jwks_url:
        return HS256Verifier(settings)
    hs256 = HS256Verifier(settings) if settings.jwt_secret.get_secret_value() else None
    return EitherVerifier(JWKSVerifier(settings), hs256)
