"""A database that goes silent (packets dropped, nothing reset): bounded waits, 503, recovery.

The proxy keeps every connection open and forwards nothing, as a network that drops packets
does. Without a client-side bound a request waits on its connection forever; the httpx timeout
here is the "no hang" bound, far above the service's own.
"""

from __future__ import annotations

import httpx

from tests.conftest import Tokens, World, report_body
from tests.live_server import live_server
from tests.resilience.tcp_proxy import TcpProxy
from tests.resilience.test_database_faults import assert_unavailable, proxied_url

__all__ = ["proxied_url"]  # the fixture, shared with the outage tests


def test_a_silent_database_gives_503_with_retry_after_not_a_hang(
    proxied_url: tuple[TcpProxy, str], world: World, tokens: Tokens
) -> None:
    proxy, url = proxied_url
    patient = world.patient(drugs=("aldesleukin",))
    headers = tokens.patient(patient["id"])
    staff = tokens.admin()
    reports = f"/v1/patients/{patient['id']}/reports"
    # Statement timeout 1 s: the service gives a silent connection 3 s (statement + 2 s).
    settings = {"db_statement_timeout_ms": 1000, "db_pool_timeout": 2}
    with (
        live_server(url, **settings) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert client.get("/readyz").status_code == 200
        first = client.post(reports, json=report_body({"fever": 1}), headers=headers)
        assert first.status_code == 201, first.text
        assert client.get(f"/v1/patients/{patient['id']}", headers=staff).status_code == 200

        proxy.freeze()  # every pooled connection is open and silent
        assert_unavailable(client.get("/readyz"))
        lost = report_body({"fever": 2}, {"systolic_bp": 85})
        assert_unavailable(client.post(reports, json=lost, headers=headers))  # asyncio engine
        assert_unavailable(client.get(reports, headers=headers))  # asyncio engine, read
        assert_unavailable(client.get(f"/v1/patients/{patient['id']}", headers=staff))  # threads
        assert_unavailable(client.get("/readyz"))

        proxy.thaw()
        assert client.get("/readyz").status_code == 200
        retried = client.post(reports, json=lost, headers=headers)
        assert retried.status_code == 201, retried.text
        assert client.post(reports, json=lost, headers=headers).status_code == 200
