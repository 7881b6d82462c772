"""The rate limit counts per verified user, per client address without a valid token, and in
Redis across worker processes when REDIS_URL is set."""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import Tokens, make_settings
from tests.resilience.served import free_port, serve

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def limited_app(database_url: str) -> Iterator[FastAPI]:
    app = create_app(make_settings(database_url, rate_limit_per_minute=3))
    yield app


def test_spelling_the_header_differently_gives_no_fresh_budget(
    limited_app: FastAPI, tokens: Tokens
) -> None:
    token = tokens.clinician("onc-a", sub="same-user")["Authorization"].removeprefix("Bearer ")
    spellings = [f"Bearer {token}", f"bearer {token}", f"BEARER {token}", f"Bearer   {token}  "]
    with TestClient(limited_app) as client:
        statuses = [
            client.get("/v1/drugs", headers={"Authorization": s}).status_code for s in spellings
        ]
        assert statuses == [200, 200, 200, 429]
        # A second token of the same user shares the user's budget.
        again = tokens.clinician("onc-b", sub="same-user")
        assert client.get("/v1/drugs", headers=again).status_code == 429
        # Another user has its own.
        other = tokens.clinician("onc-a", sub="other-user")
        assert client.get("/v1/drugs", headers=other).status_code == 200


def test_junk_tokens_count_against_the_client_address(limited_app: FastAPI) -> None:
    with TestClient(limited_app) as client:
        statuses = [
            client.get("/v1/drugs", headers={"Authorization": f"Bearer junk-{i}"}).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        # No header at all is the same address, the same budget.
        limited = client.get("/v1/drugs")
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 1


def test_the_limit_holds_across_two_workers_with_redis(
    database_url: str, tokens: Tokens, tmp_path: Path
) -> None:
    store = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        store.ping()
    except redis.RedisError as exc:
        pytest.fail(f"this test needs the Redis at {REDIS_URL}: {exc}")
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    argv = [sys.executable, "-m", "api", "serve", "--port", str(free_port()), "--workers", "2"]
    env = {
        "DATABASE_URL": database_url,
        "RATE_LIMIT_PER_MINUTE": "10",
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT_KEY_PREFIX": prefix,
    }
    headers = tokens.clinician("onc-a", sub=f"nurse-{prefix}")
    try:
        with serve(argv, tmp_path / "out.log", **env) as served:
            statuses: Counter[int] = Counter()
            for _ in range(30):
                # A new connection each time, so both worker processes take requests.
                response = httpx.get(f"{served.base}/v1/drugs", headers=headers, timeout=20)
                statuses[response.status_code] += 1
        assert statuses == {200: 10, 429: 20}, statuses
        assert store.keys(f"{prefix}:*"), "nothing was counted in Redis"
    finally:
        for key in store.scan_iter(f"{prefix}:*"):
            store.delete(key)
        store.close()
