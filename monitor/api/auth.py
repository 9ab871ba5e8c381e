"""The one bearer token, and the operator page's login cookie derived from it.

The token is compared in constant time and never logged (it is registered
with the log masker). The page's cookie holds no token: it is
"<expiry>.<name>.<HMAC-SHA256(token, expiry + name)>", so it dies with its
expiry or when the token changes. Forms carry a CSRF value, an HMAC of the
cookie, checked on every POST (the cookie is also SameSite=Strict).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

COOKIE = "repmon_session"
_NAME_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


class TokenGuard:
    def __init__(self, token: str, session_s: float) -> None:
        if len(token) < 16:
            raise ValueError("the API token must be at least 16 characters")
        self._token = token.encode()
        self.session_s = session_s

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return self.token_ok(header[7:].strip())

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "replace")).digest(),
                                   hashlib.sha256(self._token).digest())

    def _mac(self, text: str) -> str:
        return hmac.new(self._token, text.encode(), hashlib.sha256).hexdigest()

    def make_cookie(self, name: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + self.session_s)
        encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        return f"{expiry}.{encoded}.{self._mac(f'{expiry}.{encoded}')}"

    def cookie_user(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator name of a valid, unexpired cookie; None otherwise."""
        if not cookie or len(cookie) > 400:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expiry, encoded, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{expiry}.{encoded}")):
            return None
        if int(expiry) < (now or time.time()):
            return None
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def csrf(self, cookie: str) -> str:
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, cookie: str | None, given: str | None) -> bool:
        return bool(cookie and given) and hmac.compare_digest(self.csrf(cookie or ""), given or "")


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))
