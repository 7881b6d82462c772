"""Bearer tokens → Principal, and the dependencies that demand a role or a patient in scope."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

import jwt
from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import ReadSession, WriteSession
from api.errors import Forbidden, NotFound, Unauthorized
from api.patients.models import Patient
from api.settings import Settings
from api.types import NO_NUL

Role = Literal["patient", "clinician", "admin"]


class Claims(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sub: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    role: Role
    patient_id: uuid.UUID | None = None
    teams: list[Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]] = Field(
        default_factory=list, max_length=200
    )
    exp: float


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: Role
    patient_id: uuid.UUID | None = None
    teams: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def team_filter(self) -> frozenset[str] | None:
        """The teams whose data this principal sees; None means all (admin)."""
        return None if self.is_admin else self.teams


class TokenVerifier(Protocol):
    def verify(self, token: str) -> dict[str, Any]: ...


class HS256Verifier:
    """Shared-secret tokens. An RS256/JWKS verifier would implement the same ``verify``."""

    algorithms = ("HS256",)

    def __init__(self, settings: Settings) -> None:
        self._key = settings.effective_jwt_secret
        self._settings = settings
        self.verified = VerifiedTokens()

    def verify(self, token: str) -> dict[str, Any]:
        return decode_checked(token, self._key, list(self.algorithms), self._settings)


def decode_checked(
    token: str, key: Any, algorithms: list[str], settings: Settings
) -> dict[str, Any]:
    """The token's claims once its signature, ``exp``, ``sub`` and (when set) ``iss``/``aud``
    hold, and its times are numbers within the longest lifetime."""
    issuer, audience = settings.jwt_issuer, settings.jwt_audience
    required = ["exp", "sub", *(["iss"] if issuer else []), *(["aud"] if audience else [])]
    claims = jwt.decode(
        token,
        key,
        algorithms=algorithms,
        issuer=issuer,
        audience=audience,
        leeway=settings.jwt_leeway_seconds,
        options={"require": required, "verify_aud": bool(audience)},
    )
    check_times(claims, settings.jwt_max_lifetime_s, settings.jwt_leeway_seconds)
    return claims


def check_times(claims: dict[str, Any], max_lifetime: int, leeway: int) -> None:
    """``exp``, ``iat``, ``nbf`` are JSON numbers (PyJWT takes "123" too), and no token lives
    longer than ``max_lifetime``: a leaked token with ``exp`` in the year 5000 is worth little.
    """
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise jwt.InvalidTokenError(f"{name} is not a number")
    if claims["exp"] > datetime.now(UTC).timestamp() + max_lifetime + leeway:
        raise jwt.InvalidTokenError("exp is further away than the longest token lifetime")


class VerifiedTokens:
    """Principals of the tokens a verifier accepted lately, by the token's text.

    A dashboard polling the worklist, or a phone posting reports, presents the same token again
    and again, and checking its signature and claims costs more than the rest of a small
    request. An entry lasts until its token expires, and at most ``seconds``: a key that the
    identity provider withdraws stops working within that time. Past ``size`` entries the
    oldest goes. A JWKS verifier forgets them all when a key is withdrawn.
    """

    def __init__(
        self, size: int = 10_000, seconds: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._size, self._seconds, self._clock = size, seconds, clock
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._entries.pop(token, None)
            return None
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def put(self, token: str, principal: Principal, expires_at: float) -> None:
        if len(self._entries) >= self._size:
            self._entries.pop(next(iter(self._entries)), None)
        self._entries[token] = (min(expires_at, self._clock() + self._seconds), principal)


def _checked_claims(verifier: TokenVerifier, token: str) -> Claims:
    try:
        claims = Claims.model_validate(verifier.verify(token))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("The token is invalid") from exc
    except ValidationError as exc:
        raise Unauthorized("The token's claims are not of the expected shape") from exc
    if claims.role == "patient" and claims.patient_id is None:
        raise Unauthorized("A patient token must carry patient_id")
    return claims


def _principal(claims: Claims) -> Principal:
    return Principal(claims.sub, claims.role, claims.patient_id, frozenset(claims.teams))


def principal_from_token(verifier: TokenVerifier, token: str) -> Principal:
    return _principal(_checked_claims(verifier, token))


async def verify_token(verifier: TokenVerifier, token: str) -> Principal:
    """``principal_from_token``, remembered in the verifier's ``verified`` (VerifiedTokens)
    when it has one, and in a worker thread when the verifier must first ask the identity
    provider for keys (blocking I/O that must not stall the event loop)."""
    verified: VerifiedTokens | None = getattr(verifier, "verified", None)
    if verified is not None and (principal := verified.get(token)) is not None:
        return principal
    needs_fetch = getattr(verifier, "needs_fetch", None)
    if needs_fetch is not None and needs_fetch(token):
        claims = await run_in_threadpool(_checked_claims, verifier, token)
    else:
        claims = _checked_claims(verifier, token)
    principal = _principal(claims)
    if verified is not None:
        verified.put(token, principal, claims.exp)
    return principal


def mint_token(
    settings: Settings,
    *,
    sub: str,
    role: Role,
    patient_id: uuid.UUID | str | None = None,
    teams: list[str] | None = None,
    ttl: timedelta = timedelta(hours=12),
) -> str:
    if ttl.total_seconds() > settings.jwt_max_lifetime_s:
        longest = settings.jwt_max_lifetime_s
        raise ValueError(f"a token lives at most {longest} s (JWT_MAX_LIFETIME_S)")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + ttl}
    if patient_id is not None:
        claims["patient_id"] = str(patient_id)
    if teams:
        claims["teams"] = teams
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.effective_jwt_secret, algorithm="HS256")


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    # Verified once per request: the rate limiter may have done it, and a route that takes both a
    # role (Security, with scopes) and a patient in scope resolves this dependency twice.
    state = request.scope.setdefault("state", {})
    verified = state.get("verified_token")
    if verified is not None and verified[0] == credentials.credentials:
        principal = verified[1]
    else:
        principal = await verify_token(request.app.state.token_verifier, credentials.credentials)
        state["verified_token"] = (credentials.credentials, principal)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Any:
    async def _check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"The role '{principal.role}' may not do this")
        return principal

    # Security, not Depends: the OpenAPI document lists the roles on the operation's bearer
    # requirement (OpenAPI 3.1 allows role names there), and so that it may answer 403.
    return Security(_check, scopes=list(roles))


Staff = Annotated[Principal, require_roles("clinician", "admin")]
Admin = Annotated[Principal, require_roles("admin")]


def can_see_patient(principal: Principal, patient_id: uuid.UUID, care_team: str) -> bool:
    if principal.role == "admin":
        return True
    if principal.role == "patient":
        return principal.patient_id == patient_id
    return care_team in principal.teams


async def scoped_patient(
    session: AsyncSession, patient_id: uuid.UUID, principal: Principal
) -> Patient:
    """The patient, if the caller may see it; otherwise 404 (no existence leak)."""
    patient = await session.get(Patient, patient_id)
    if patient is None or not can_see_patient(principal, patient.id, patient.care_team):
        raise NotFound("No such patient")
    return patient


# The patient of the path, if the caller may see it, checked on the session the endpoint names
# (FastAPI resolves a dependency once per request: no second connection): for an endpoint that
# reads (with ReadSession), and one that writes (with WriteSession).
async def _read_patient(
    patient_id: uuid.UUID, principal: CurrentPrincipal, session: ReadSession
) -> Patient:
    return await scoped_patient(session, patient_id, principal)


async def _write_patient(
    patient_id: uuid.UUID, principal: CurrentPrincipal, session: WriteSession
) -> Patient:
    return await scoped_patient(session, patient_id, principal)


ReadPatient = Annotated[Patient, Depends(_read_patient)]
WritePatient = Annotated[Patient, Depends(_write_patient)]
