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
from dataclasses import dataclass

import structlog
from aiohttp import web

from workers.auth import ROLES, Principal, Principals, is_loopback
from workers.errors import ConfigError
from workers.settings import DashboardSettings

log = structlog.get_logger(__name__)
MIN_SESSION_KEY_CHARS = 32
COOKIE = "parcelflow_session"


@dataclass(frozen=True)
class Sessions:
    """Signed session values: ``<expiry>:<principal>:<hmac>``."""

    key: bytes
    seconds: float

    def issue(self, name: str, now: float) -> str:
        body = f"{int(now + self.seconds)}:{name}"
        return f"{body}:{self.sign(body)}"

    def sign(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, value: str, now: float) -> str | None:
        """The principal's name, if ``value`` is one of ours and has not ended."""
        body, _, signature = value.rpartition(":")
        if not body or not hmac.compare_digest(self.sign(body).encode(), signature.encode()):
            return None
        expiry, _, name = body.partition(":")
        if not expiry.isdigit() or int(expiry) < now:
            return None
        return name


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
        name = self.sessions.verify(request.cookies.get(COOKIE, ""), time.time())
        return None if name is None else self.principals.by_name(name)

    async def login(self, request: web.Request) -> web.Response:
        """``POST /login`` with a form (or JSON) field ``token``."""
        if self.mode != "login":
            return web.json_response({"error": "not_found"}, status=404)
        form = await request.post()
        token = str(form.get("token", ""))
        principal = self.principals.by_token(token) if token.isascii() and token else None
        if principal is None or not principal.may("operator"):
            log.warning("dashboard_login_refused")
            return login_page("That token is not an operator's.", status=401)
        response = web.HTTPSeeOther(location="./")
        response.set_cookie(
            COOKIE,
            self.sessions.issue(principal.name, time.time()),
            max_age=int(self.sessions.seconds),
            httponly=True,
            samesite="Strict",
            secure=self.settings.dashboard_cookie_secure,
            path="/",
        )
        log.info("dashboard_login", principal=principal.name)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
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
