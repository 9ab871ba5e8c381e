"""Google Postmaster Tools and SNDS: parsers, the JWT bearer flow against a real
token endpoint, and 401 / 429 / 5xx handled with back-off and a clear,
stored error - never a crash."""

from __future__ import annotations

import json
from datetime import UTC, date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from monitor.config import parse_config
from monitor.core.db import session_scope
from monitor.signals.models import PostmasterDomainDay, SignalEvent, SignalFetchState, SndsIpDay, SndsIpStatus
from monitor.signals.postmaster import cycle, google, snds
from monitor.signals.postmaster.http import retry_after_seconds
from tests.fixtures.http_fixture_server import GoogleTokenEndpoint, Reply, google_api

TODAY = date(2026, 6, 17)
CLIENT_EMAIL = "repmon@monitoring.iam.gserviceaccount.test"


def stat(metric: str, day: int, value: dict) -> dict:
    return {"name": f"domains/example.com/domainStats/opaque{metric}{day}", "metric": metric,
            "date": {"year": 2026, "month": 6, "day": day}, "value": value}


V2_RESPONSE = {"domainStats": [
    stat("spam_rate", 14, {"doubleValue": 0.0008}),
    stat("auth_spf", 14, {"doubleValue": 0.998}),
    stat("auth_dkim", 14, {"doubleValue": 0.9995}),
    stat("auth_dmarc", 14, {"doubleValue": 0.997}),
    stat("tls_inbound", 14, {"doubleValue": 0.9999}),
    stat("delivery_error_rate", 14, {"doubleValue": 0.0031}),
    stat("reject_rate", 14, {"doubleValue": 0.0011}),
    stat("reject_ip_in_rbls", 14, {"doubleValue": 0.0007}),
    stat("fbl_ids", 14, {"stringList": {"values": ["promo-2026-06", "newsletter"]}}),
    stat("spam_rate", 15, {"doubleValue": 0.0034}),
    stat("auth_spf", 15, {"doubleValue": 0.991}),
    stat("temp_fail_rate", 15, {"floatValue": 0.02}),
], "nextPageToken": ""}
FBL_RESPONSE = {"domainStats": [stat("fbl_rate:promo-2026-06", 14, {"doubleValue": 0.0041})]}
V1_RESPONSE = {"trafficStats": [
    {"name": "domains/example.com/trafficStats/20260615", "userReportedSpamRatio": 0.0008,
     "userReportedSpamRatioLowerBound": 0.0005, "userReportedSpamRatioUpperBound": 0.0011,
     "domainReputation": "MEDIUM", "spfSuccessRatio": 0.99,
     "ipReputations": [{"reputation": "HIGH", "ipCount": "2", "sampleIps": ["192.0.2.10", "192.0.2.11"]}],
     "spammyFeedbackLoops": [{"id": "promo", "spamRatio": 0.004}],
     "deliveryErrors": [{"errorClass": "PERMANENT_ERROR", "errorType": "IP_IN_RBL", "errorRatio": 0.001},
                        {"errorClass": "TEMPORARY_ERROR", "errorType": "RATE_LIMIT_EXCEEDED", "errorRatio": 0.02}]},
    {"name": "domains/example.com/trafficStats/20260616", "dkimSuccessRatio": 1.0},
], "nextPageToken": ""}


# --- pure parsers --------------------------------------------------------------------------

def test_v2_stats_grouped_by_day_matched_on_metric():
    rows = google.parse_v2_stats("example.com", V2_RESPONSE["domainStats"] + FBL_RESPONSE["domainStats"])
    assert [r.day for r in rows] == [date(2026, 6, 14), date(2026, 6, 15)]
    first, second = rows
    assert (first.spam_rate, first.spf_success_rate, first.dmarc_success_rate) == (0.0008, 0.998, 0.997)
    assert first.delivery_error_rate == 0.0031
    assert {"type": "reject", "reason": "ip_in_rbls", "rate": 0.0007} in first.delivery_errors
    assert first.feedback_loops == [{"id": "promo-2026-06", "spam_rate": 0.0041}, {"id": "newsletter",
                                                                                   "spam_rate": None}]
    assert second.spam_rate == 0.0034 and second.dkim_success_rate is None  # absent means no data, not zero
    assert second.delivery_error_rate == 0.02  # only temp fails reported that day


def test_v2_values_of_every_kind():
    assert google.stat_value({"intValue": "1520"}) == 1520
    assert google.stat_value({"stringValue": "x"}) == "x"
    assert google.stat_value({"stringList": {"values": ["a"]}}) == ["a"]
    assert google.stat_value(None) is None


def test_v1_traffic_stats():
    first, second = google.parse_v1_traffic_stats("example.com", V1_RESPONSE["trafficStats"])
    assert first.day == date(2026, 6, 15) and first.domain_reputation == "MEDIUM"
    assert first.spam_rate_upper == 0.0011 and first.delivery_error_rate == pytest.approx(0.021)
    assert first.ip_reputations[0] == {"reputation": "HIGH", "ip_count": 2, "sample_ips": ["192.0.2.10", "192.0.2.11"]}
    assert second.spam_rate is None and second.dkim_success_rate == 1.0


SNDS_DATA = (
    "192.0.2.10,6/14/2026 12:00 AM,6/14/2026 11:59 PM,48213,48102,47950,GREEN,< 0.1%,,,0,mta1.example.com,b@example.com,\r\n"
    "192.0.2.12,6/14/2026 12:00 AM,6/14/2026 11:59 PM,20410,20388,20101,YELLOW,0.4%,"
    "6/14/2026 8:07 AM,6/14/2026 12:03 PM,14,mta3.example.com,c@example.com,\r\n"
    "192.0.2.13,6/14/2026 12:00 AM,6/14/2026 11:59 PM,9120,9001,8870,RED,1.7%,"
    "6/14/2026 9:08 AM,6/14/2026 8:09 PM,41,mta4.example.com,d@example.com,checked\r\n"
    "not-an-ip,6/14/2026 12:00 AM,6/14/2026 11:59 PM,1,1,1,GREEN,< 0.1%,,,0,x,y,\r\n"
)
SNDS_STATUS = ("192.0.2.13,192.0.2.13,Yes,Blocked due to user complaints or other evidence of spamming\r\n"
               "203.0.113.64,203.0.113.71,Yes,Blocked due to user complaints or other evidence of spamming\r\n")


def test_snds_data_csv():
    rows, bad = snds.parse_data_csv(SNDS_DATA)
    assert [r.ip for r in rows] == ["192.0.2.10", "192.0.2.12", "192.0.2.13"]
    green, yellow, red = rows
    assert green.complaint_rate == pytest.approx(0.001) and green.complaint_rate_below
    assert green.trap_period_start is None and green.day == date(2026, 6, 14)
    assert yellow.complaint_rate == pytest.approx(0.004) and not yellow.complaint_rate_below
    assert yellow.trap_hits == 14 and yellow.trap_period_start.hour == 8
    assert red.filter_result == "RED" and red.comments == "checked"
    assert len(bad) == 1 and bad[0].line == 4 and "not-an-ip" in bad[0].text  # kept, with the reason


def test_snds_status_csv():
    rows, bad = snds.parse_status_csv(SNDS_STATUS)
    assert [(r.first_ip, r.last_ip, r.blocked) for r in rows] == [
        ("192.0.2.13", "192.0.2.13", True), ("203.0.113.64", "203.0.113.71", True)]
    assert snds.parse_status_csv("") == ([], [])


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    from datetime import datetime
    now = datetime(2026, 6, 17, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Wed, 17 Jun 2026 12:00:30 GMT", now=now) == 30


# --- Google against a local server --------------------------------------------------------------

@pytest.fixture
def service_account(tmp_path, http_fixture_server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": CLIENT_EMAIL, "private_key": pem,
                                "private_key_id": "kid-1", "token_uri": http_fixture_server.url("/token")}))
    # google-auth addresses the assertion to Google's token endpoint whatever token_uri says
    # (Google documents aud as always https://oauth2.googleapis.com/token).
    endpoint = GoogleTokenEndpoint(key.public_key(), CLIENT_EMAIL, google.DEFAULT_TOKEN_URL)
    http_fixture_server.script("POST", "/token", endpoint)
    return path, endpoint


def google_config(server, path, **google_extra):
    return parse_config({"postmaster": {
        "google": {"service_account_file": str(path), "domains": ["example.com"], "api_url": server.url(),
                   "lookback_days": 3, **google_extra},
        "backoff_s": 0.01, "max_backoff_s": 5, "max_attempts": 3, "timeout_s": 5}})


def stored_days(engine):
    with session_scope(engine) as session:
        return session.execute(select(PostmasterDomainDay).order_by(PostmasterDomainDay.day)).scalars().all()


def events(engine):
    with session_scope(engine) as session:
        return session.execute(select(SignalEvent).order_by(SignalEvent.id)).scalars().all()


def fetch_state(engine, source):
    with session_scope(engine) as session:
        return session.get(SignalFetchState, source)


QUERY_PATH = "/v2/domains/example.com/domainStats:query"


def v2_route(endpoint):
    def body(request):
        metrics = [m["name"] for m in request.json()["metricDefinitions"]]
        return FBL_RESPONSE if metrics[0].startswith("fbl_rate:") else V2_RESPONSE
    return google_api(endpoint, body)


async def test_google_v2_fetch_and_store(engine, http_fixture_server, service_account):
    path, endpoint = service_account
    http_fixture_server.script("POST", QUERY_PATH, v2_route(endpoint))
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert report.failed == {} and report.ok == ["google:v2:example.com"]

    # the JWT was signed by the service account key and verified by the endpoint
    assert endpoint.claims[0]["iss"] == CLIENT_EMAIL
    assert endpoint.claims[0]["scope"] == google.SCOPE_V2_TRAFFIC
    queries = http_fixture_server.requests_to(QUERY_PATH)
    assert len(queries) == 2  # the stats, then the Feedback-ID spam rates
    body = queries[0].json()
    assert body["timeQuery"]["dateRanges"]["dateRanges"] == [
        {"start": {"year": 2026, "month": 6, "day": 14}, "end": {"year": 2026, "month": 6, "day": 16}}]
    assert {"name": "auth_spf", "baseMetric": {"standardMetric": "AUTH_SUCCESS_RATE"},
            "filter": 'auth_type = "spf"'} in body["metricDefinitions"]
    assert queries[1].json()["metricDefinitions"][0]["filter"] == 'feedback_loop_id = "newsletter"'
    assert queries[0].headers["Authorization"] == "Bearer token-1"

    days = stored_days(engine)
    assert [(d.day, d.spam_rate, d.api) for d in days] == [(date(2026, 6, 14), 0.0008, "v2"), (date(2026, 6, 15),
                                                                                               0.0034, "v2")]
    assert days[0].feedback_loops[0] == {"id": "promo-2026-06", "spam_rate": 0.0041}
    # 0.34 % crosses Gmail's 0.3 % line: one event; fetching the same days again adds none
    spam = [e for e in events(engine) if e.kind == "spam_rate_high"]
    assert [(e.subject, e.details["day"], e.details["level"]) for e in spam] == [("example.com", "2026-06-15",
                                                                                  "critical")]
    await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert len(stored_days(engine)) == 2 and len([e for e in events(engine) if e.kind == "spam_rate_high"]) == 1
    assert len(endpoint.issued) == 2  # a new cycle, a new token source


async def test_google_v1_traffic_stats_and_domain_listing(engine, http_fixture_server, service_account):
    path, endpoint = service_account
    http_fixture_server.script("POST", QUERY_PATH, v2_route(endpoint))
    http_fixture_server.script("GET", "/v2/domains", google_api(endpoint, {"domains": [
        {"name": "domains/example.com", "verificationState": "VERIFIED"}], "nextPageToken": ""}))
    http_fixture_server.script("GET", "/v1/domains/example.com/trafficStats", google_api(endpoint, V1_RESPONSE))
    config = google_config(http_fixture_server, path, domains=[], traffic_stats_v1=True)
    report = await cycle.run_google(config.postmaster, engine, today=TODAY)
    assert report.failed == {}
    assert set(endpoint.claims[0]["scope"].split()) == {google.SCOPE_V2_TRAFFIC, google.SCOPE_V2_DOMAIN,
                                                        google.SCOPE_V1}
    v1_request = http_fixture_server.requests_to("/v1/domains/example.com/trafficStats")[0]
    assert (v1_request.query["startDate.day"], v1_request.query["endDate.day"]) == ("14", "17")  # end exclusive
    v1_rows = [d for d in stored_days(engine) if d.api == "v1"]
    assert [d.domain_reputation for d in v1_rows] == ["MEDIUM", None]
    # 0.08 % midpoint but 0.11 % upper bound: judged on the upper bound
    assert any(e.kind == "spam_rate_high" and e.details["api"] == "v1" for e in events(engine))


async def test_expired_token_is_refreshed_once(engine, http_fixture_server, service_account):
    path, endpoint = service_account
    api = v2_route(endpoint)

    def revoke_then_answer(request):
        endpoint.revoke_all()  # the token expired between the token call and the API call
        return api(request)

    http_fixture_server.script("POST", QUERY_PATH, revoke_then_answer, api)
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert report.failed == {}
    assert len(endpoint.issued) == 2
    assert [r.headers["Authorization"] for r in http_fixture_server.requests_to(QUERY_PATH)][:2] == [
        "Bearer token-1", "Bearer token-2"]


async def test_credentials_rejected_is_a_stored_error(engine, http_fixture_server, service_account, caplog):
    path, endpoint = service_account
    http_fixture_server.script("POST", QUERY_PATH, Reply(401, {"error": {
        "code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}))
    config = google_config(http_fixture_server, path)
    report = await cycle.run_google(config.postmaster, engine, today=TODAY)
    error = report.failed["google:v2:example.com"]
    assert "credentials rejected (401: expired or revoked)" in error and "UNAUTHENTICATED" in error
    state = fetch_state(engine, "google:v2:example.com")
    assert state.status == "error" and state.http_status == 401 and "credentials rejected" in state.error
    assert [e.kind for e in events(engine)] == ["fetch_failed"]
    assert "credentials rejected" in caplog.text
    await cycle.run_google(config.postmaster, engine, today=TODAY)  # still failing: one event, two failures counted
    assert [e.kind for e in events(engine)] == ["fetch_failed"]
    assert fetch_state(engine, "google:v2:example.com").consecutive_failures == 2

    http_fixture_server.script("POST", QUERY_PATH, v2_route(endpoint))
    await cycle.run_google(config.postmaster, engine, today=TODAY)
    assert [e.kind for e in events(engine)][-1] == "fetch_recovered"
    assert fetch_state(engine, "google:v2:example.com").status == "ok"


async def test_wrong_service_account_key_stops_early(engine, http_fixture_server, service_account, tmp_path):
    path, endpoint = service_account
    data = json.loads(path.read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    data["private_key"] = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
    path.write_text(json.dumps(data))
    config = google_config(http_fixture_server, path, domains=["example.com", "example.net"])
    report = await cycle.run_google(config.postmaster, engine, today=TODAY)
    assert set(report.failed) == {"google:v2:example.com", "google:v2:example.net"}
    assert "Invalid JWT Signature" in report.failed["google:v2:example.com"]
    assert "key expired, deleted or not allowed" in report.failed["google:v2:example.com"]
    assert len(http_fixture_server.requests_to("/token")) == 1  # not retried: a 400 will not heal
    assert http_fixture_server.requests_to(QUERY_PATH) == []


async def test_unreadable_service_account_file(engine, tmp_path):
    bad = tmp_path / "sa.json"
    bad.write_text("{not json")
    config = parse_config({"postmaster": {"google": {"service_account_file": str(bad), "domains": ["example.com"]}}})
    report = await cycle.run_google(config.postmaster, engine, today=TODAY)
    assert "not JSON" in report.failed["google"]


async def test_429_waits_for_retry_after(engine, http_fixture_server, service_account):
    path, endpoint = service_account
    http_fixture_server.script("POST", QUERY_PATH, Reply(429, {"error": {"status": "RESOURCE_EXHAUSTED"}},
                                                         {"Retry-After": "1"}), v2_route(endpoint))
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert report.failed == {}
    assert len(http_fixture_server.requests_to(QUERY_PATH)) == 3  # 429, then the stats, then the FBL rates


async def test_429_with_a_long_retry_after_gives_up_now(engine, http_fixture_server, service_account):
    path, _ = service_account
    http_fixture_server.script("POST", QUERY_PATH, Reply(429, {"error": {"status": "RESOURCE_EXHAUSTED"}},
                                                         {"Retry-After": "3600"}))
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert "retry after 3600 s" in report.failed["google:v2:example.com"]
    assert len(http_fixture_server.requests_to(QUERY_PATH)) == 1
    assert events(engine)[0].details["retry_after_s"] == 3600


async def test_5xx_is_retried_with_backoff(engine, http_fixture_server, service_account):
    path, endpoint = service_account
    http_fixture_server.script("POST", QUERY_PATH, Reply(503, "unavailable"), Reply(502, "bad gateway"),
                               v2_route(endpoint))
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    assert report.failed == {} and len(stored_days(engine)) == 2


async def test_5xx_that_persists_is_a_clear_error(engine, http_fixture_server, service_account):
    path, _ = service_account
    http_fixture_server.script("POST", QUERY_PATH, Reply(500, {"error": {"status": "INTERNAL", "message": "boom"}}))
    report = await cycle.run_google(google_config(http_fixture_server, path).postmaster, engine, today=TODAY)
    error = report.failed["google:v2:example.com"]
    assert "server error 500" in error and "gave up after 3 attempts" in error
    assert len(http_fixture_server.requests_to(QUERY_PATH)) == 3
    assert fetch_state(engine, "google:v2:example.com").status == "error"


async def test_server_gone_is_a_network_error(engine, service_account, http_fixture_server):
    path, _ = service_account
    config = google_config(http_fixture_server, path)
    await http_fixture_server.stop()
    report = await cycle.run_google(config.postmaster, engine, today=TODAY)
    assert "network error" in report.failed["google:v2:example.com"]


# --- SNDS against a local server -----------------------------------------------------------------

SNDS_KEY = "0f3c9a2e-secret-key"


def snds_config(server, **extra):
    return parse_config({"postmaster": {
        "snds": {"data_url": server.url("/snds/data.aspx"), "ipstatus_url": server.url("/snds/ipStatus.aspx"),
                 "data_key": SNDS_KEY, "ipstatus_key": SNDS_KEY + "-2", "lookback_days": 2, **extra},
        "backoff_s": 0.01, "max_attempts": 2}})


async def test_snds_fetch_store_and_events(engine, http_fixture_server):
    def data(request):
        assert request.query["key"] == SNDS_KEY
        return Reply(200, SNDS_DATA if request.query["date"] == "061626" else "")

    http_fixture_server.script("GET", "/snds/data.aspx", data)
    http_fixture_server.script("GET", "/snds/ipStatus.aspx", Reply(200, SNDS_STATUS), Reply(200, ""))
    config = snds_config(http_fixture_server)
    report = await cycle.run_snds(config.postmaster, engine, today=TODAY)
    assert report.failed == {}
    assert sorted(r.query["date"] for r in http_fixture_server.requests_to("/snds/data.aspx")) == ["061526", "061626"]
    with session_scope(engine) as session:
        rows = session.execute(select(SndsIpDay).order_by(SndsIpDay.ip)).scalars().all()
        blocked = session.execute(select(SndsIpStatus).order_by(SndsIpStatus.first_ip)).scalars().all()
    assert [(r.ip, r.filter_result, r.trap_hits) for r in rows] == [
        ("192.0.2.10", "GREEN", 0), ("192.0.2.12", "YELLOW", 14), ("192.0.2.13", "RED", 41)]
    assert rows[1].complaint_rate == pytest.approx(0.004) and rows[0].complaint_rate_below
    assert [(b.first_ip, b.last_ip) for b in blocked] == [("192.0.2.13", "192.0.2.13"), ("203.0.113.64",
                                                                                         "203.0.113.71")]
    kinds = sorted((e.kind, e.subject) for e in events(engine))
    assert kinds == sorted([("snds_filter_yellow", "192.0.2.12"), ("snds_trap_hits", "192.0.2.12"),
                            ("snds_filter_red", "192.0.2.13"), ("snds_trap_hits", "192.0.2.13"),
                            ("feed_parse_error", "snds:data"),
                            ("snds_blocked", "192.0.2.13"), ("snds_blocked", "203.0.113.64-203.0.113.71")])
    parse_error = next(e for e in events(engine) if e.kind == "feed_parse_error")
    assert parse_error.details["lines"][0]["text"].startswith("not-an-ip")  # the unreadable line is kept

    await cycle.run_snds(config.postmaster, engine, today=TODAY)  # same data again; IP status now empty
    new = [(e.kind, e.subject) for e in events(engine)][len(kinds):]
    assert sorted(new) == sorted([("feed_parse_error", "snds:data"), ("snds_unblocked", "192.0.2.13"),
                                  ("snds_unblocked", "203.0.113.64-203.0.113.71")])
    with session_scope(engine) as session:
        assert session.execute(select(SndsIpStatus)).scalars().all() == []
        assert len(session.execute(select(SndsIpDay)).scalars().all()) == 3


async def test_snds_expired_key(engine, http_fixture_server, caplog):
    http_fixture_server.script("GET", "/snds/data.aspx", Reply(404, "Not Found"))
    http_fixture_server.script("GET", "/snds/ipStatus.aspx", Reply(403, "Forbidden"))
    report = await cycle.run_snds(snds_config(http_fixture_server).postmaster, engine, today=TODAY)
    assert "may have expired" in report.failed["snds:data"] and "may have expired" in report.failed["snds:ipstatus"]
    assert len(http_fixture_server.requests_to("/snds/data.aspx")) == 2  # one per day, no retries of a 404
    for source in ("snds:data", "snds:ipstatus"):
        state = fetch_state(engine, source)
        assert state.status == "error" and SNDS_KEY not in state.error
    assert SNDS_KEY not in caplog.text
    assert all(SNDS_KEY not in e.reason for e in events(engine))
