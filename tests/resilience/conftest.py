"""Fixtures of the tests in this folder."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient


# These tests watch the service from outside the test client (a live server, another connection,
# the job loop, PostgreSQL notifications): they need what a test writes committed.
@pytest.fixture
def app(committed_app: FastAPI) -> FastAPI:
    return committed_app


@pytest.fixture
def client(committed_client: TestClient) -> TestClient:
    return committed_client
