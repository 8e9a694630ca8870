"""Who is calling, and what it may do: principals with roles and warehouses.

Every caller of the HTTP API (receiver and dashboard) is a named principal holding one
bearer token, some roles and the warehouses it may act in:

- ``orders``: post orders (``POST /v1/orders``);
- ``boxes``: post box-closed events of its warehouses (``POST /v1/boxes``);
- ``labels``: read the labels and documents of its warehouses;
- ``operator``: void, failures and replay, the dashboard.

Principals come from ``PARCELFLOW_PRINCIPALS`` and ``PARCELFLOW_PRINCIPALS_FILE`` (same
JSON; a file for a Kubernetes Secret). A token may be given as its SHA-256 (hex), so a
file at rest holds no usable token: tokens are random (``parcelflow principals token``
makes one), so a plain digest is enough. Every check compares digests in constant time.
The deprecated ``PARCELFLOW_INGEST_TOKEN(S)`` still work as principals with every role in
every warehouse.

One aiohttp middleware (``middleware``) guards every route registered with ``protect``;
routes not registered (signed webhooks, probes, metrics) are left to their own checks.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import orjson
import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute
from pydantic import TypeAdapter, ValidationError

from schemas.label import LabelJob
from workers.errors import ConfigError
from workers.settings import ALL_WAREHOUSES, PRINCIPAL_NAME, AuthSettings, PrincipalSpec, Role

log = structlog.get_logger(__name__)
MIN_TOKEN_CHARS = 32  # a deprecated plain token at least this long (principal tokens: 43)
ROLES: tuple[Role, ...] = get_args(Role)
SPECS = TypeAdapter(dict[str, PrincipalSpec])


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[Role]
    warehouses: frozenset[str] | None  # None: every warehouse

    def may(self, role: Role) -> bool:
        return role in self.roles

    def in_warehouse(self, warehouse_id: str) -> bool:
        return self.warehouses is None or warehouse_id in self.warehouses

    @property
    def only_warehouse(self) -> str | None:
        """Its warehouse when it names exactly one, else None."""
        if self.warehouses is not None and len(self.warehouses) == 1:
            return next(iter(self.warehouses))
        return None


def in_warehouses(job: LabelJob, warehouses: frozenset[str]) -> bool:
    """Whether a job is of these warehouses (its own, or its boxes' when it names none):
    what an operator of some warehouses may see and replay."""
    found = {job.warehouse_id} if job.warehouse_id else {p.warehouse_id for p in job.parcels}
    return bool(found) and found <= warehouses


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def principal_of(name: str, spec: PrincipalSpec) -> tuple[bytes, Principal]:
    if spec.token is not None:
        key = digest(spec.token.get_secret_value())
    else:
        assert spec.token_sha256 is not None  # noqa: S101 (validated: one of the two)
        key = bytes.fromhex(spec.token_sha256)
    warehouses = None
    if spec.warehouses is not None and ALL_WAREHOUSES not in spec.warehouses:
        warehouses = frozenset(spec.warehouses)
    return key, Principal(name, frozenset(spec.roles), warehouses)


def read_file(path: Path) -> dict[str, PrincipalSpec]:
    """The principals of a file; a problem names the file and the entry, never a value."""
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"principals_file {path}: cannot read it ({exc.strerror})") from None
    except orjson.JSONDecodeError:
        raise ValueError(f"principals_file {path}: not valid JSON") from None
    try:
        specs = SPECS.validate_python(raw)
    except ValidationError as exc:
        raise ValueError(f"principals_file {path}: {problems(exc)}") from None
    bad = [name for name in specs if not PRINCIPAL_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"principals_file {path}: a principal's name is 1 to 64 of A-Za-z0-9._@-")
    return specs


def problems(exc: ValidationError) -> str:
    """Where and what, without the input value (it may be a token)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


class Principals:
    """The principals of one process, found by their token's digest."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]], open_access: bool) -> None:
        self.entries = list(entries)
        self.open_access = open_access and not self.entries
        names = [p.name for _, p in self.entries]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigError(f"principals named twice: {', '.join(sorted(duplicates))}")
        holders: dict[bytes, list[str]] = {}
        for key, principal in self.entries:
            holders.setdefault(key, []).append(principal.name)
        shared = sorted(", ".join(sorted(n)) for n in holders.values() if len(n) > 1)
        if shared:
            raise ConfigError(
                f"principals holding the same token: {'; '.join(shared)} (each caller its "
                "own token: `parcelflow principals token`)"
            )

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Principals:
        specs = dict(settings.principals)
        if settings.principals_file is not None:
            in_file = read_file(settings.principals_file)
            twice = sorted(set(specs) & set(in_file))
            if twice:
                raise ConfigError(
                    f"principals named in both PARCELFLOW_PRINCIPALS and "
                    f"PARCELFLOW_PRINCIPALS_FILE: {', '.join(twice)}"
                )
            specs |= in_file
        entries = [principal_of(name, spec) for name, spec in specs.items()]
        legacy = {n: t.get_secret_value() for n, t in settings.ingest_tokens.items()}
        if settings.ingest_token is not None:
            legacy["default"] = settings.ingest_token.get_secret_value()
        legacy = {name: token for name, token in legacy.items() if token}
        weak = sorted(name for name, token in legacy.items() if len(token) < MIN_TOKEN_CHARS)
        if weak:
            raise ConfigError(
                f"PARCELFLOW_INGEST_TOKEN(S): the token of {', '.join(weak)} is shorter than "
                f"{MIN_TOKEN_CHARS} characters (`parcelflow principals token` makes a strong "
                "one; better, move to PARCELFLOW_PRINCIPALS)"
            )
        if legacy:
            log.warning(
                "ingest_tokens_deprecated",
                principals=sorted(legacy),
                detail="PARCELFLOW_INGEST_TOKEN(S) give every role in every warehouse; "
                "use PARCELFLOW_PRINCIPALS",
            )
        everything = frozenset(ROLES)
        entries += [(digest(t), Principal(n, everything, None)) for n, t in legacy.items()]
        return cls(entries, settings.ingest_open)

    def by_token(self, token: str) -> Principal | None:
        """The principal holding ``token``; every entry is compared, in constant time."""
        given = digest(token)
        found = None
        for key, principal in self.entries:
            if hmac.compare_digest(given, key):
                found = principal
        return found

    def by_name(self, name: str) -> Principal | None:
        return next((p for _, p in self.entries if p.name == name), None)

    def key_of(self, name: str) -> bytes | None:
        """The digest of a principal's token (what a dashboard session remembers of it)."""
        return next((k for k, p in self.entries if p.name == name), None)

    def from_header(self, header: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header, or None (no
        header, another scheme, a token that is not ASCII, or no such token)."""
        if self.open_access:
            return Principal("open", frozenset(ROLES), None)
        token = bearer_token(header or "")
        return None if token is None else self.by_token(token)


def bearer_token(header: str) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme in any case), or None;
    None too for anything but printable ASCII."""
    if not header.isascii() or not header.isprintable():
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the aiohttp side --------------------------------------------------------------------

PRINCIPAL = web.RequestKey("principal", Principal)
Identify = Callable[[web.Request], Principal | None]
ROUTE_ROLES = web.AppKey("route_roles", dict[AbstractResource, Role])
IDENTIFY: web.AppKey[Identify] = web.AppKey("identify")
Refuse = Callable[[web.Request, int, str], web.StreamResponse]
REFUSE: web.AppKey[Refuse] = web.AppKey(
    "refuse"
)  # optional: how an app words a refusal (a login page)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def protect(app: web.Application, route: AbstractRoute, role: Role) -> AbstractRoute:
    """Only principals with ``role`` reach ``route`` (every method of its path: a GET's
    HEAD too)."""
    assert route.resource is not None  # noqa: S101 (a route added to a router has one)
    app.setdefault(ROUTE_ROLES, {})[route.resource] = role
    return route


def refusal(status: int, detail: str) -> web.Response:
    """401 (who are you?) or 403 (you may not), as JSON."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    error = "unauthorized" if status == 401 else "forbidden"
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a known principal, 403 without the route's role; else the principal
    is ``request[PRINCIPAL]`` for the handler's warehouse checks."""
    resource = request.match_info.route.resource
    role = request.app.get(ROUTE_ROLES, {}).get(resource) if resource is not None else None
    if role is None:
        return await handler(request)
    refuse = request.app.get(REFUSE) or (lambda _, status, detail: refusal(status, detail))
    principal = request.app[IDENTIFY](request)
    if principal is None:
        return refuse(request, 401, "missing or unknown credentials")
    if not principal.may(role):
        return refuse(request, 403, f"principal {principal.name} does not have the role {role}")
    request[PRINCIPAL] = principal
    return await handler(request)
