"""Google Postmaster Tools: service-account tokens, v2 domainStats, v1 trafficStats.

Authentication is the OAuth 2.0 JWT bearer grant (RFC 7523), done by
google-auth's `service_account.Credentials`: it signs the assertion with the
service account's RSA key and trades it at the token endpoint (the key file's
token_uri, or `token_url`) for an access token. We keep the token until
google-auth says it is expired and drop it when the API answers 401.

Figures are fractions (0.003 = 0.3 %). v2 returns one DomainStat per
(metric, day), matched on the metric name we chose; v1 returns one
TrafficStats per day. Both become `DomainDay`s.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_exceptions
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import service_account

from monitor.signals.postmaster.http import FetchError, RetryPolicy, backoff_delay, fetch

DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE_V2_TRAFFIC = "https://www.googleapis.com/auth/postmaster.traffic.readonly"
SCOPE_V2_DOMAIN = "https://www.googleapis.com/auth/postmaster.domain"
SCOPE_V1 = "https://www.googleapis.com/auth/postmaster.readonly"
REJECT_REASONS = ("bad_attachment", "bad_or_missing_ptr_record", "ip_in_rbls", "low_domain_reputation",
                  "low_ip_reputation", "spammy_content", "stamp_policy_error", "other")
TEMP_FAIL_REASONS = ("anomalous_traffic_pattern", "other")
MAX_FEEDBACK_LOOPS = 20
TOKEN_ENDPOINT = "Google token endpoint"


# --- credentials -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A checked service-account key file (its JSON, key included: never logged)."""

    client_email: str
    token_uri: str
    info: dict[str, Any] = field(repr=False)


def load_service_account(path: Path) -> ServiceAccount:
    """Read a Google service-account JSON key; errors say what is wrong, never the key."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise FetchError(f"service account file {path}: {exc.strerror}", kind="auth") from None
    except ValueError:
        raise FetchError(f"service account file {path}: not JSON", kind="auth") from None
    if not isinstance(data, dict):
        raise FetchError(f"service account file {path}: not a service account key (a JSON object)", kind="auth")
    missing = [k for k in ("client_email", "private_key") if not data.get(k)]
    if missing:
        raise FetchError(f"service account file {path}: missing {', '.join(missing)}", kind="auth")
    # Checked here so a bad file is a clear start-up error, not a failure deep in the signer.
    try:
        key = serialization.load_pem_private_key(str(data["private_key"]).encode(), password=None)
    except (ValueError, TypeError):
        raise FetchError(f"service account file {path}: private_key is not a PEM private key", kind="auth") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FetchError(f"service account file {path}: private_key is not an RSA key", kind="auth")
    info = {**data, "token_uri": data.get("token_uri") or DEFAULT_TOKEN_URL}
    return ServiceAccount(str(data["client_email"]), info["token_uri"], info)


class _TimedRequest(GoogleRequest):
    """google-auth's requests transport with our timeout on every call (its default is 120 s)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Any:
        return super().__call__(url, method=method, body=body, headers=headers, timeout=self.timeout_s, **kwargs)


class TokenSource:
    """Access tokens for one service account (google-auth credentials), kept
    until they expire or the API refuses them."""

    def __init__(self, account: ServiceAccount, scopes: list[str], *, token_url: str | None = None,
                 subject: str | None = None) -> None:
        self.account = account
        self.scopes = scopes
        self.token_url = token_url or account.token_uri
        self.subject = subject
        try:
            self.credentials = service_account.Credentials.from_service_account_info(
                {**account.info, "token_uri": self.token_url}, scopes=scopes, subject=subject)
        except (ValueError, TypeError, KeyError) as exc:
            raise FetchError(f"service account key of {account.client_email} cannot be used: "
                             f"{type(exc).__name__}", kind="auth") from None
        self._stale = True

    def invalidate(self) -> None:
        self._stale = True

    async def token(self, policy: RetryPolicy) -> str:
        if not self._stale and self.credentials.valid:
            return str(self.credentials.token)
        try:
            await self._refresh(policy)
        except google_exceptions.RefreshError as exc:
            detail = str(exc.args[0]) if exc.args else type(exc).__name__
            if getattr(exc, "retryable", False):  # 5xx / 429 / temporarily_unavailable after google-auth's retries
                raise FetchError(f"{TOKEN_ENDPOINT}: server error: {detail}", kind="server") from None
            # invalid_grant and friends: key expired or deleted, account disabled, clock skew
            raise FetchError(f"{TOKEN_ENDPOINT}: {detail} (service account key expired, deleted or not allowed)",
                             kind="auth") from None
        except google_exceptions.TransportError as exc:
            cause = exc.__cause__ or exc
            raise FetchError(f"{TOKEN_ENDPOINT}: network error: {type(cause).__name__}", kind="network") from None
        token = self.credentials.token
        if not token:
            raise FetchError(f"{TOKEN_ENDPOINT}: no access_token in the answer", kind="auth")
        self._stale = False
        return str(token)

    async def _refresh(self, policy: RetryPolicy) -> None:
        """One token exchange; network errors are retried like every feed request
        (google-auth itself retries 5xx and 429 answers)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self.credentials.refresh, _TimedRequest(policy.timeout_s))
                return
            except google_exceptions.TransportError:
                if attempt >= policy.max_attempts:
                    raise
            await asyncio.sleep(min(backoff_delay(policy, attempt), policy.max_backoff_s))


# --- the API -----------------------------------------------------------------------------

@dataclass(slots=True)
class DomainDay:
    domain: str
    day: date
    api: str  # v1 | v2
    spam_rate: float | None = None
    spam_rate_lower: float | None = None
    spam_rate_upper: float | None = None
    spf_success_rate: float | None = None
    dkim_success_rate: float | None = None
    dmarc_success_rate: float | None = None
    tls_inbound_rate: float | None = None
    tls_outbound_rate: float | None = None
    delivery_error_rate: float | None = None
    domain_reputation: str | None = None
    delivery_errors: list[dict[str, Any]] = field(default_factory=list)
    ip_reputations: list[dict[str, Any]] = field(default_factory=list)
    feedback_loops: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def _metric(name: str, standard: str, filter_: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "baseMetric": {"standardMetric": standard}}
    if filter_:
        out["filter"] = filter_
    return out


def v2_metric_definitions() -> list[dict[str, Any]]:
    metrics = [
        _metric("spam_rate", "SPAM_RATE"),
        *(_metric(f"auth_{t}", "AUTH_SUCCESS_RATE", f'auth_type = "{t}"') for t in ("spf", "dkim", "dmarc")),
        *(_metric(f"tls_{d}", "TLS_ENCRYPTION_RATE", f'traffic_direction = "{d}"') for d in ("inbound", "outbound")),
        _metric("delivery_error_rate", "DELIVERY_ERROR_RATE"),
        _metric("reject_rate", "DELIVERY_ERROR_RATE", 'error_type = "reject"'),
        _metric("temp_fail_rate", "DELIVERY_ERROR_RATE", 'error_type = "temp_fail"'),
        *(_metric(f"reject_{r}", "DELIVERY_ERROR_RATE", f'error_type = "reject" AND error_reason = "{r}"')
          for r in REJECT_REASONS),
        *(_metric(f"temp_fail_{r}", "DELIVERY_ERROR_RATE", f'error_type = "temp_fail" AND error_reason = "{r}"')
          for r in TEMP_FAIL_REASONS),
        _metric("fbl_ids", "FEEDBACK_LOOP_ID"),
    ]
    return metrics


def _gdate(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def v2_query_body(metrics: list[dict[str, Any]], start: date, end: date, page_token: str | None = None) -> dict:
    body: dict[str, Any] = {
        "metricDefinitions": metrics,
        "timeQuery": {"dateRanges": {"dateRanges": [{"start": _gdate(start), "end": _gdate(end)}]}},
        "aggregationGranularity": "DAILY",
        "pageSize": 200,
    }
    if page_token:
        body["pageToken"] = page_token
    return body


def stat_value(value: dict[str, Any] | None) -> Any:
    """The union value of a DomainStat (int64 arrives as a string)."""
    if not value:
        return None
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "floatValue" in value:
        return float(value["floatValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "stringList" in value:
        return list((value["stringList"] or {}).get("values", []))
    return value.get("stringValue")


def parse_v2_stats(domain: str, stats: Iterable[dict[str, Any]]) -> list[DomainDay]:
    """DomainStats (one per metric and day) -> one DomainDay per day. Names are opaque: match on `metric`."""
    days: dict[date, DomainDay] = {}
    for stat in stats:
        raw_date = stat.get("date")
        metric = stat.get("metric")
        if not raw_date or not metric:
            continue
        day = date(int(raw_date["year"]), int(raw_date["month"]), int(raw_date["day"]))
        row = days.setdefault(day, DomainDay(domain, day, "v2"))
        row.metrics[metric] = stat_value(stat.get("value"))
    for row in days.values():
        _fill_v2(row)
    return sorted(days.values(), key=lambda r: r.day)


def _fill_v2(row: DomainDay) -> None:
    m = row.metrics
    row.spam_rate = m.get("spam_rate")
    row.spf_success_rate = m.get("auth_spf")
    row.dkim_success_rate = m.get("auth_dkim")
    row.dmarc_success_rate = m.get("auth_dmarc")
    row.tls_inbound_rate = m.get("tls_inbound")
    row.tls_outbound_rate = m.get("tls_outbound")
    row.delivery_error_rate = m.get("delivery_error_rate")
    if row.delivery_error_rate is None and (m.get("reject_rate") is not None or m.get("temp_fail_rate") is not None):
        row.delivery_error_rate = (m.get("reject_rate") or 0.0) + (m.get("temp_fail_rate") or 0.0)
    errors = []
    for kind, reasons in (("reject", REJECT_REASONS), ("temp_fail", TEMP_FAIL_REASONS)):
        if m.get(f"{kind}_rate") is not None:
            errors.append({"type": kind, "reason": None, "rate": m[f"{kind}_rate"]})
        for reason in reasons:
            if m.get(f"{kind}_{reason}") is not None:
                errors.append({"type": kind, "reason": reason, "rate": m[f"{kind}_{reason}"]})
    row.delivery_errors = errors
    loops = []
    for name, value in m.items():
        if name.startswith("fbl_rate:"):
            loops.append({"id": name.split(":", 1)[1], "spam_rate": value})
    for fbl_id in m.get("fbl_ids") or []:
        if not any(loop["id"] == fbl_id for loop in loops):
            loops.append({"id": fbl_id, "spam_rate": None})
    row.feedback_loops = loops


def parse_v1_traffic_stats(domain: str, items: Iterable[dict[str, Any]]) -> list[DomainDay]:
    rows = []
    for item in items:
        name = str(item.get("name", ""))
        stamp = name.rsplit("/", 1)[-1]
        if len(stamp) != 8 or not stamp.isdigit():
            continue
        day = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))
        errors = [{"class": e.get("errorClass"), "type": e.get("errorType"), "rate": e.get("errorRatio")}
                  for e in item.get("deliveryErrors", [])]
        rates = [e["rate"] for e in errors if isinstance(e.get("rate"), (int, float))]
        rows.append(DomainDay(
            domain=domain, day=day, api="v1",
            spam_rate=item.get("userReportedSpamRatio"),
            spam_rate_lower=item.get("userReportedSpamRatioLowerBound"),
            spam_rate_upper=item.get("userReportedSpamRatioUpperBound"),
            spf_success_rate=item.get("spfSuccessRatio"), dkim_success_rate=item.get("dkimSuccessRatio"),
            dmarc_success_rate=item.get("dmarcSuccessRatio"), tls_inbound_rate=item.get("inboundEncryptionRatio"),
            tls_outbound_rate=item.get("outboundEncryptionRatio"),
            delivery_error_rate=sum(rates) if rates else None,
            domain_reputation=item.get("domainReputation"),
            delivery_errors=errors,
            ip_reputations=[{"reputation": r.get("reputation"), "ip_count": int(r.get("ipCount", 0) or 0),
                             "sample_ips": r.get("sampleIps", [])} for r in item.get("ipReputations", [])],
            feedback_loops=[{"id": f.get("id"), "spam_rate": f.get("spamRatio")}
                            for f in item.get("spammyFeedbackLoops", [])],
            metrics={k: v for k, v in item.items() if k != "name"},
        ))
    return rows


class PostmasterClient:
    def __init__(self, session: aiohttp.ClientSession, tokens: TokenSource, api_url: str, policy: RetryPolicy) -> None:
        self.session = session
        self.tokens = tokens
        self.api_url = api_url.rstrip("/")
        self.policy = policy
        self._token = ""

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        self._token = await self.tokens.token(self.policy)

        async def refresh() -> None:
            self.tokens.invalidate()
            self._token = await self.tokens.token(self.policy)

        reply = await fetch(self.session, method, f"{self.api_url}{path}", what=what, policy=self.policy,
                            headers=lambda: {"Authorization": f"Bearer {self._token}"},
                            on_unauthorized=refresh, **kwargs)
        return reply.json(what)

    async def list_domains(self) -> list[str]:
        domains: list[str] = []
        token = None
        for _ in range(100):  # pages; bounded
            params = {"pageSize": "200", **({"pageToken": token} if token else {})}
            data = await self._call("GET", "/v2/domains", "Postmaster Tools domains list", params=params)
            domains += [str(d.get("name", "")).split("/", 1)[-1] for d in data.get("domains", []) if d.get("name")]
            token = data.get("nextPageToken")
            if not token:
                break
        return domains

    async def domain_stats(self, domain: str, start: date, end: date) -> list[DomainDay]:
        stats = await self._query(domain, v2_metric_definitions(), start, end)
        rows = parse_v2_stats(domain, stats)
        fbl_ids = sorted({i for r in rows for i in (r.metrics.get("fbl_ids") or [])})[:MAX_FEEDBACK_LOOPS]
        if fbl_ids:
            # One more query for the spam rate of each Feedback-ID seen in the window.
            metrics = [_metric(f"fbl_rate:{i}", "FEEDBACK_LOOP_SPAM_RATE", f'feedback_loop_id = "{i}"')
                       for i in fbl_ids]
            stats += await self._query(domain, metrics, start, end)
            rows = parse_v2_stats(domain, stats)
        return rows

    async def _query(self, domain: str, metrics: list[dict[str, Any]], start: date, end: date) -> list[dict]:
        stats: list[dict] = []
        token = None
        for _ in range(100):
            data = await self._call("POST", f"/v2/domains/{domain}/domainStats:query",
                                    f"Postmaster Tools domainStats for {domain}",
                                    json_body=v2_query_body(metrics, start, end, token))
            stats += data.get("domainStats", [])
            token = data.get("nextPageToken")
            if not token:
                break
        return stats

    async def traffic_stats(self, domain: str, start: date, end_exclusive: date) -> list[DomainDay]:
        items: list[dict] = []
        token = None
        for _ in range(100):
            params = {"startDate.year": str(start.year), "startDate.month": str(start.month),
                      "startDate.day": str(start.day), "endDate.year": str(end_exclusive.year),
                      "endDate.month": str(end_exclusive.month), "endDate.day": str(end_exclusive.day),
                      "pageSize": "200", **({"pageToken": token} if token else {})}
            data = await self._call("GET", f"/v1/domains/{domain}/trafficStats",
                                    f"Postmaster Tools v1 trafficStats for {domain}", params=params)
            items += data.get("trafficStats", [])
            token = data.get("nextPageToken")
            if not token:
                break
        return parse_v1_traffic_stats(domain, items)


def scopes_for(v1: bool, list_domains: bool) -> list[str]:
    scopes = [SCOPE_V2_TRAFFIC]
    if list_domains:
        scopes.append(SCOPE_V2_DOMAIN)
    if v1:
        scopes.append(SCOPE_V1)
    return scopes
