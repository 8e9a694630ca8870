"""Who may open the dashboard: operators, by one of three ways (``dashboard_auth``).

- ``login``: ``POST /login`` with the token of a principal that has the operator role
  sets a session cookie (HttpOnly, SameSite=Strict, Secure unless turned off) signed with
  ``dashboard_session_key``; it names the principal and when it ends, nothing else.
- ``proxy``: an auth proxy in front (oauth2-proxy and the like) signs users in and names
  them in ``dashboard_proxy_header``; those in ``dashboard_proxy_operators`` are
  operators. Only the proxy may reach the dashboard (a NetworkPolicy says so).
- ``none``: everyone is an operator; refused unless the dashboard listens on loopback.

In every mode an API client may also send ``Authorization: Bearer <operator token>``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from schemas.session import SessionEnded
from workers.auth import ROLES, Principal, Principals, is_loopback
from workers.errors import ConfigError
from workers.settings import DashboardSettings

log = structlog.get_logger(__name__)
MIN_SESSION_KEY_CHARS = 32
COOKIE = "parcelflow_session"


@dataclass(frozen=True)
class Session:
    expiry: int  # unix seconds
    name: str  # the principal's
    session_id: str  # 32 hex: what a logout ends, on every replica
    token: str  # 16 hex of the principal's token digest at login: a new token ends it


def token_print(key: bytes) -> str:
    """What a session remembers of its principal's token: a digest of its digest."""
    return hashlib.sha256(b"parcelflow-session:" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Sessions:
    """Signed session values: ``<expiry>:<session id>:<token print>:<principal>:<hmac>``."""

    key: bytes
    seconds: float

    def issue(self, name: str, token: str, now: float) -> tuple[str, Session]:
        session = Session(int(now + self.seconds), name, secrets.token_hex(16), token)
        body = f"{session.expiry}:{session.session_id}:{session.token}:{name}"
        return f"{body}:{self.sign(body)}", session

    def sign(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, value: str, now: float) -> Session | None:
        """The session, if ``value`` is one of ours and has not run out."""
        body, _, signature = value.rpartition(":")
        if not body or not hmac.compare_digest(self.sign(body).encode(), signature.encode()):
            return None
        expiry, session_id, token, name = [*body.split(":", 3), "", "", ""][:4]
        if not expiry.isdigit() or int(expiry) < now or not name:
            return None
        return Session(int(expiry), name, session_id, token)


class Ended:
    """Sessions ended before their time (a logout on any replica), until they run out.
    ``write`` shares an ending with every replica (``dashboard.sessions.v1``)."""

    def __init__(self) -> None:
        self.until: dict[str, int] = {}  # session id -> its expiry, unix seconds
        self.write: Callable[[SessionEnded], Awaitable[None]] | None = None

    def learn(self, ended: SessionEnded, now: float) -> None:
        if ended.expires_at_ms / 1000 > now:
            self.until[ended.session_id] = ended.expires_at_ms // 1000
        for old in [sid for sid, at in self.until.items() if at < now]:
            del self.until[old]

    def __contains__(self, session_id: str) -> bool:
        return session_id in self.until


def cross_site(request: web.Request) -> bool:
    """A request a page of another site made (Fetch Metadata, else Origin): login and
    logout refuse it, so no other site can sign an operator in or out."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser's cross-site request (a script, an old browser)
    return origin != f"{request.scheme}://{request.host}"


class Access:
    """The dashboard's rule for who is calling (``identify``) and its login routes."""

    def __init__(self, settings: DashboardSettings, principals: Principals) -> None:
        self.settings = settings
        self.mode = settings.dashboard_auth
        self.principals = principals
        loopback = is_loopback(settings.dashboard_host)
        if self.mode == "none" and not loopback:
            raise ConfigError(
                "PARCELFLOW_DASHBOARD_AUTH=none opens the dashboard (and replay) to anyone: "
                "it is refused unless PARCELFLOW_DASHBOARD_HOST is a loopback address"
            )
        if settings.ingest_open and not loopback:
            raise ConfigError(
                "PARCELFLOW_INGEST_OPEN lets any caller in as an operator: it is refused "
                "unless PARCELFLOW_DASHBOARD_HOST is a loopback address"
            )
        if not settings.dashboard_cookie_secure and not loopback:
            raise ConfigError(
                "PARCELFLOW_DASHBOARD_COOKIE_SECURE=false sends the session cookie over "
                "plain HTTP: it is refused unless PARCELFLOW_DASHBOARD_HOST is a loopback "
                "address (serve the dashboard over HTTPS)"
            )
        if self.mode == "proxy" and not settings.dashboard_proxy_operators:
            raise ConfigError(
                "PARCELFLOW_DASHBOARD_AUTH=proxy needs PARCELFLOW_DASHBOARD_PROXY_OPERATORS "
                "(the users the proxy names who are operators)"
            )
        key = settings.dashboard_session_key.get_secret_value().encode()
        if key and len(key) < MIN_SESSION_KEY_CHARS:
            raise ConfigError(
                f"PARCELFLOW_DASHBOARD_SESSION_KEY is shorter than {MIN_SESSION_KEY_CHARS} "
                "characters: it signs every session (`openssl rand -base64 48` makes one)"
            )
        if self.mode == "login" and not key:
            key = secrets.token_bytes(32)
            log.warning(
                "dashboard_session_key_random",
                detail="sessions end when this process stops and are not shared by replicas: "
                "set PARCELFLOW_DASHBOARD_SESSION_KEY",
            )
        self.sessions = Sessions(key, settings.dashboard_session_hours * 3600)
        self.ended = Ended()

    @property
    def says(self) -> str:
        """How the dashboard is guarded, for its start line."""
        return {
            "none": "open without login (loopback only)",
            "login": "operators log in with their token",
            "proxy": f"operators named by the auth proxy in {self.settings.dashboard_proxy_header}",
        }[self.mode]

    def identify(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization")
        if header is not None:
            return self.principals.from_header(header)
        if self.mode == "none":
            return Principal("local", frozenset(ROLES), None)
        if self.mode == "proxy":
            user = request.headers.get(self.settings.dashboard_proxy_header, "")
            if user and user in self.settings.dashboard_proxy_operators:
                return Principal(user, frozenset({"operator"}), None)
            return None
        session = self.sessions.verify(request.cookies.get(COOKIE, ""), time.time())
        if session is None or session.session_id in self.ended:
            return None
        principal = self.principals.by_name(session.name)
        key = self.principals.key_of(session.name)
        if principal is None or key is None or session.token != token_print(key):
            return None  # gone, or its token changed since the login
        return principal

    async def login(self, request: web.Request) -> web.Response:
        """``POST /login`` with a form (or JSON) field ``token``."""
        if self.mode != "login":
            return web.json_response({"error": "not_found"}, status=404)
        if cross_site(request):
            log.warning("dashboard_login_cross_site")
            return web.json_response({"error": "forbidden", "detail": "cross-site"}, status=403)
        form = await request.post()
        token = str(form.get("token", ""))
        principal = self.principals.by_token(token) if token.isascii() and token else None
        if principal is None or not principal.may("operator"):
            log.warning("dashboard_login_refused")
            return login_page("That token is not an operator's.", status=401)
        response = web.HTTPSeeOther(location="./")
        key = self.principals.key_of(principal.name) or b""
        value, _ = self.sessions.issue(principal.name, token_print(key), time.time())
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(self.sessions.seconds),
            httponly=True,
            samesite="Strict",
            secure=self.settings.dashboard_cookie_secure,
            path="/",
        )
        log.info("dashboard_login", principal=principal.name)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        """End the session on every replica (``dashboard.sessions.v1``), not only in this
        browser: the same cookie, replayed, is refused from now on."""
        if cross_site(request):
            log.warning("dashboard_logout_cross_site")
            return web.json_response({"error": "forbidden", "detail": "cross-site"}, status=403)
        now = time.time()
        session = self.sessions.verify(request.cookies.get(COOKIE, ""), now)
        if session is not None and session.session_id not in self.ended:
            ended = SessionEnded(
                session_id=session.session_id,
                principal=session.name[:64],
                ended_at_ms=int(now * 1000),
                expires_at_ms=session.expiry * 1000,
            )
            self.ended.learn(ended, now)
            if self.ended.write is not None:
                await self.ended.write(ended)
            log.info("dashboard_logout", principal=session.name)
        response = web.json_response({"status": "signed out"})
        response.del_cookie(COOKIE, path="/")
        return response

    async def login_form(self, request: web.Request) -> web.Response:
        return login_page("")


def login_page(message: str, status: int = 200) -> web.Response:
    note = f'<p class="bad">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>parcelflow: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font:inherit;width:100%;margin:.5rem 0;padding:.4rem}}.bad{{color:#b00020}}</style>
</head><body><h1>parcelflow dashboard</h1>{note}
<form method="post" action="login"><label for="token">Operator token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button id="sign-in" type="submit">Sign in</button></form></body></html>"""
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'"
        },
    )
