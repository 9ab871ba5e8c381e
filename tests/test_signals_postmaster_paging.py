"""Google Postmaster Tools: results spread over pages (`nextPageToken`) and the
403 PERMISSION_DENIED answer (a service account not added to the domain in
Postmaster Tools), against the local Google stand-in (a real JWT-bearer token
endpoint and API routes that check its tokens). Everything goes through
`cycle.run_google`, the public fetch entry point, so the tests do not depend
on how the client signs its JWT."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from monitor.config import parse_config
from monitor.core.db import session_scope
from monitor.signals.models import PostmasterDomainDay, SignalEvent, SignalFetchState
from monitor.signals.postmaster import cycle, google
from tests.fixtures.http_fixture_server import GoogleTokenEndpoint, Recorded, Reply, google_api

TODAY = date(2026, 6, 17)  # lookback 3 days: 14, 15 and 16 June
CLIENT_EMAIL = "repmon@monitoring.iam.gserviceaccount.test"
# /work/shared/reference/postmaster-samples/gpt-v1-error-permission-denied.json, as Google sends it
PERMISSION_DENIED = {"error": {"code": 403, "message": "The caller does not have permission",
                               "status": "PERMISSION_DENIED"}}


def stat(domain: str, metric: str, day: int, value: float) -> dict:
    return {"name": f"domains/{domain}/domainStats/opaque{metric}{day}", "metric": metric,
            "date": {"year": 2026, "month": 6, "day": day}, "value": {"doubleValue": value}}


def traffic(domain: str, day: int, spam: float) -> dict:
    return {"name": f"domains/{domain}/trafficStats/202606{day:02d}", "userReportedSpamRatio": spam,
            "domainReputation": "HIGH"}


def paged(endpoint: GoogleTokenEndpoint, pages: list[dict], token_of: Callable[[Recorded], str | None]):
    """An API route serving `pages` in turn, chained by nextPageToken as Google does:
    each page names the token of the next one, the last names none, and a token
    that was never handed out is Google's 400 INVALID_ARGUMENT."""
    tokens = [f"page-{i}-token" for i in range(len(pages))]

    def body(request: Recorded) -> Any:
        token = token_of(request)
        index = 0 if not token else tokens.index(token) if token in tokens else None
        if index is None:
            return None
        page = dict(pages[index])
        if index + 1 < len(pages):
            page["nextPageToken"] = tokens[index + 1]
        return page

    api = google_api(endpoint, body)

    def handle(request: Recorded) -> Reply:
        reply = api(request)
        if reply.status == 200 and reply.body is None:
            return Reply(400, {"error": {"code": 400, "message": "Invalid page token.", "status": "INVALID_ARGUMENT"}})
        return reply

    return handle


def query_token(request: Recorded) -> str | None:
    return request.query.get("pageToken")


def body_token(request: Recorded) -> str | None:
    return request.json().get("pageToken")


@pytest.fixture
def service_account(tmp_path, http_fixture_server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": CLIENT_EMAIL, "private_key": pem,
                                "private_key_id": "kid-1", "token_uri": http_fixture_server.url("/token")}))
    # The assertion's aud: Google's documented token URL (what google-auth writes) or the
    # token_uri it is posted to; either way it must be signed by this key, for this account.
    endpoint = GoogleTokenEndpoint(key.public_key(), CLIENT_EMAIL,
                                   (google.DEFAULT_TOKEN_URL, http_fixture_server.url("/token")))
    http_fixture_server.script("POST", "/token", endpoint)
    return path, endpoint


def google_config(server, path, **google_extra):
    return parse_config({"postmaster": {
        "google": {"service_account_file": str(path), "domains": ["example.com"], "api_url": server.url(),
                   "lookback_days": 3, **google_extra},
        "backoff_s": 0.01, "max_backoff_s": 5, "max_attempts": 3, "timeout_s": 5}}).postmaster


def stored(engine) -> list[tuple[str, str, date, float | None]]:
    with session_scope(engine) as session:
        rows = session.execute(select(PostmasterDomainDay)).scalars().all()
        return sorted((r.domain, r.api, r.day, r.spam_rate) for r in rows)


def query_path(domain: str) -> str:
    return f"/v2/domains/{domain}/domainStats:query"


async def test_v2_domain_stats_follow_next_page_token(sqlite_engine, http_fixture_server, service_account):
    path, endpoint = service_account
    pages = [{"domainStats": [stat("example.com", "spam_rate", 14, 0.0008)]},
             {"domainStats": [stat("example.com", "spam_rate", 15, 0.0012)]},
             {"domainStats": [stat("example.com", "spam_rate", 16, 0.0009)]}]
    http_fixture_server.script("POST", query_path("example.com"), paged(endpoint, pages, body_token))
    report = await cycle.run_google(google_config(http_fixture_server, path), sqlite_engine, today=TODAY)
    assert report.failed == {} and report.ok == ["google:v2:example.com"]
    requests = http_fixture_server.requests_to(query_path("example.com"))
    assert [r.json().get("pageToken") for r in requests] == [None, "page-1-token", "page-2-token"]
    # every page is the same query: only the token changes
    first = requests[0].json()
    assert all({k: v for k, v in r.json().items() if k != "pageToken"} == first for r in requests)
    assert stored(sqlite_engine) == [("example.com", "v2", date(2026, 6, 14), 0.0008),
                                     ("example.com", "v2", date(2026, 6, 15), 0.0012),
                                     ("example.com", "v2", date(2026, 6, 16), 0.0009)]
    assert len(endpoint.issued) == 1  # one token for all the pages


async def test_domain_list_and_v1_traffic_stats_follow_next_page_token(sqlite_engine, http_fixture_server,
                                                                      service_account):
    path, endpoint = service_account
    http_fixture_server.script("GET", "/v2/domains", paged(endpoint, [
        {"domains": [{"name": "domains/example.com", "verificationState": "VERIFIED"}]},
        {"domains": [{"name": "domains/example.net", "verificationState": "VERIFIED"}]},
    ], query_token))
    for domain in ("example.com", "example.net"):
        http_fixture_server.script("POST", query_path(domain), paged(endpoint, [
            {"domainStats": [stat(domain, "spam_rate", 14, 0.001)]}], body_token))
        http_fixture_server.script("GET", f"/v1/domains/{domain}/trafficStats", paged(endpoint, [
            {"trafficStats": [traffic(domain, 14, 0.0001)]},
            {"trafficStats": [traffic(domain, 15, 0.0002)]},
        ], query_token))
    config = google_config(http_fixture_server, path, domains=[], traffic_stats_v1=True)
    report = await cycle.run_google(config, sqlite_engine, today=TODAY)
    assert report.failed == {}
    listing = http_fixture_server.requests_to("/v2/domains")
    assert [r.query.get("pageToken") for r in listing] == [None, "page-1-token"]
    assert {"google:v2:example.com", "google:v2:example.net",
            "google:v1:example.com", "google:v1:example.net"} <= set(report.ok)
    v1_requests = http_fixture_server.requests_to("/v1/domains/example.net/trafficStats")
    assert [r.query.get("pageToken") for r in v1_requests] == [None, "page-1-token"]
    assert v1_requests[1].query["startDate.day"] == v1_requests[0].query["startDate.day"] == "14"
    v1_rows = [row for row in stored(sqlite_engine) if row[1] == "v1"]
    assert v1_rows == [("example.com", "v1", date(2026, 6, 14), 0.0001), ("example.com", "v1", date(2026, 6, 15),
                                                                          0.0002),
                       ("example.net", "v1", date(2026, 6, 14), 0.0001), ("example.net", "v1", date(2026, 6, 15),
                                                                          0.0002)]


async def test_403_permission_denied_is_a_stored_error_and_other_domains_go_on(sqlite_engine, http_fixture_server,
                                                                               service_account, caplog):
    path, endpoint = service_account
    http_fixture_server.script("POST", query_path("example.com"), Reply(403, PERMISSION_DENIED))
    http_fixture_server.script("POST", query_path("example.net"), paged(endpoint, [
        {"domainStats": [stat("example.net", "spam_rate", 14, 0.0004)]}], body_token))
    config = google_config(http_fixture_server, path, domains=["example.com", "example.net"])
    report = await cycle.run_google(config, sqlite_engine, today=TODAY)

    error = report.failed["google:v2:example.com"]
    assert "permission denied (403)" in error
    assert "PERMISSION_DENIED The caller does not have permission" in error
    assert report.ok == ["google:v2:example.net"]  # one domain's 403 does not stop the others
    assert len(http_fixture_server.requests_to(query_path("example.com"))) == 1  # a 403 will not heal: no retry
    assert len(endpoint.issued) == 1  # nor is it a stale token: no refresh
    assert stored(sqlite_engine) == [("example.net", "v2", date(2026, 6, 14), 0.0004)]
    with session_scope(sqlite_engine) as session:
        state = session.get(SignalFetchState, "google:v2:example.com")
        assert (state.status, state.http_status) == ("error", 403)
        assert "permission denied" in state.error
        kinds = [(e.kind, e.subject) for e in session.execute(select(SignalEvent).order_by(SignalEvent.id)).scalars()]
    assert kinds == [("fetch_failed", "google:v2:example.com")]
    assert "permission denied" in caplog.text

    # access granted later: the next cycle recovers
    http_fixture_server.script("POST", query_path("example.com"), paged(endpoint, [
        {"domainStats": [stat("example.com", "spam_rate", 14, 0.002)]}], body_token))
    report = await cycle.run_google(config, sqlite_engine, today=TODAY)
    assert report.failed == {}
    with session_scope(sqlite_engine) as session:
        assert session.get(SignalFetchState, "google:v2:example.com").status == "ok"
        last = session.execute(select(SignalEvent).order_by(SignalEvent.id.desc())).scalars().first()
        assert last is not None and last.kind == "fetch_recovered"


async def test_403_on_the_domain_listing_stops_the_cycle_with_the_reason(sqlite_engine, http_fixture_server,
                                                                          service_account):
    path, _ = service_account
    http_fixture_server.script("GET", "/v2/domains", Reply(403, PERMISSION_DENIED))
    report = await cycle.run_google(google_config(http_fixture_server, path, domains=[]), sqlite_engine, today=TODAY)
    assert "permission denied (403)" in report.failed["google:domains"]
    assert len(http_fixture_server.requests_to("/v2/domains")) == 1
    assert [r.path for r in http_fixture_server.requests if r.path.startswith("/v2/domains/")] == []


def test_permission_denied_sample_matches_the_reference(shared_dir):
    sample = shared_dir / "reference" / "postmaster-samples" / "gpt-v1-error-permission-denied.json"
    if not sample.exists():
        pytest.skip(f"{sample} is absent")
    assert json.loads(sample.read_text()) == PERMISSION_DENIED
